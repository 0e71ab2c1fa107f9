"""Export a checkpoint of ours as a Hugging Face GPT-2 folder, for transformers, evaluation harnesses
and serving.

    python export.py --out_dir out --hf_dir out_hf        # out/ckpt.pt -> out_hf/
    python export.py --ckpt out/best.pt --hf_dir out_best_hf

The folder holds config.json, model.safetensors and GPT-2's tokenizer (vocab.json, merges.txt,
tokenizer_config.json): transformers' GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained
load it, and train.py --init_from reads it back. Models with GPT-2's vocabulary export exactly:
fine-tunes of GPT-2 (--init_from gpt2) and --full_vocab runs, in GPT-2's layout (biases, tanh GELU:
"gelu_new") or our default one (no biases: written as zeros; exact GELU: "gelu"). A --full_vocab
run's table is padded to 50,304 rows for fast matmuls; the 47 padding rows, which no text contains,
are cropped to GPT-2's 50,257. A value head is dropped: Hugging Face's GPT-2 has none, and it adds
the same v(s) to every logit of a state, so transformers' logits are ours minus v(s) and the policy,
softmax of either, is ours.

A compact-vocabulary model (the default on the built-in task) is refused: as a GPT-2 folder its
missing tokens would score logit 0, not -inf (the tied head has no bias that could say -inf), most
of the probability at our models' soft values; and no stock Hugging Face tokenizer renumbers GPT-2's
BPE into its ids (docs/huggingface.md has the numbers).

Then export measures, on a few sequences of the checkpoint's own validation data (random tokens
where it names none), how much cropping the padding rows changes the real tokens' log-probabilities,
and, where transformers is installed, loads the folder back and compares its logits with ours
(--no_check skips both). Writing needs the optional safetensors (pip install safetensors), imported
only when writing; the check imports transformers only when it is installed.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable

import torch

from data import Vocab, load_dataset
from errors import Parser, UserError, WriteError, run_main
from gpt2 import GPT2_VOCAB, config_to_hf, first_line, weights_to_hf
from model import GPT, GPTConfig
from runfiles import checkpoint_path, load_checkpoint, model_from_checkpoint, reason, replacing


class ExportError(UserError):
    """A checkpoint that cannot be exported faithfully, a target that is not an empty folder, or a
    missing optional package."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="export.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", default="out", help="the run whose ckpt.pt to export")
    p.add_argument("--ckpt", default=None, help="a checkpoint file to export instead (e.g. out/best.pt)")
    p.add_argument("--hf_dir", default=None, help="the Hugging Face folder to write (new or empty); "
                                                  "default: OUT_DIR_hf")
    p.add_argument("--no_check", action="store_true",
                   help="skip measuring the padding rows' effect and loading the folder back (which holds "
                        "the model twice more in memory)")
    args = p.parse_args(argv)
    args.ckpt = args.ckpt or checkpoint_path(args.out_dir)
    args.hf_dir = args.hf_dir or os.path.normpath(args.out_dir) + "_hf"
    return args


# ----------------------------------------------------------------------------------------------
# What a checkpoint exports as

def exported_rows(checkpoint: dict, path: str) -> int:
    """How many token rows the folder keeps: GPT-2's 50,257. ExportError for a compact vocabulary."""
    gpt2_ids = checkpoint["vocab"].get("gpt2_ids")
    if gpt2_ids is not None:
        raise ExportError(f"{path} has a compact vocabulary ({len(gpt2_ids)} GPT-2 tokens, renumbered), which no "
                          "GPT-2 folder holds faithfully (its other tokens would score logit 0, not -inf); "
                          "export a model trained with --full_vocab or --init_from gpt2")
    rows = checkpoint["model_args"]["vocab_size"]
    if rows < GPT2_VOCAB:
        raise ExportError(f"{path} has {rows} token rows, fewer than GPT-2's {GPT2_VOCAB}")
    return GPT2_VOCAB


def notes(config: GPTConfig, rows: int) -> list[str]:
    """What the folder's model differs in from ours, one line each (nothing for a GPT-2 layout)."""
    said = []
    if not config.bias:
        said.append("our bias-free layout: GPT-2's biases are written as zeros")
    if config.vocab_size > rows:
        said.append(f"the {config.vocab_size - rows} padding rows (ids {rows}-{config.vocab_size - 1}, in no text) "
                    f"are cropped to GPT-2's {rows} tokens")
    if config.value_head:
        said.append("the value head is dropped (Hugging Face's GPT-2 has none): its logits are ours minus "
                    "v(s) at every position; softmax ignores v, so the policy is the same")
    return said


# ----------------------------------------------------------------------------------------------
# The folder

# GPT-2's BPE as tiktoken fetches and caches it (tiktoken_ext.openai_public: the URLs and sha256
# hashes): encoder.json is what Hugging Face's GPT-2 tokenizer reads as vocab.json, vocab.bpe its
# merges.txt. Reading them through tiktoken's cache works offline where data.py's tokenizer does.
GPT2_BPE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
TOKENIZER_FILES = {"vocab.json": ("encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
                   "merges.txt": ("vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5")}


def tokenizer_files(block_size: int) -> dict[str, bytes]:
    """GPT-2's tokenizer files, with a tokenizer_config.json that says the model's context length."""
    from tiktoken.load import read_file_cached
    try:
        files = {name: read_file_cached(GPT2_BPE + source, expected_hash)
                 for name, (source, expected_hash) in TOKENIZER_FILES.items()}
    except Exception as e:  # offline without a cache, a corrupt download: many exception types
        raise ExportError(f"could not read GPT-2's tokenizer files ({first_line(e)}); offline? set "
                          "TIKTOKEN_CACHE_DIR to a folder holding them") from None
    eot = "<|endoftext|>"
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "bos_token": eot,
              "eos_token": eot, "unk_token": eot, "add_prefix_space": False}
    return {**files, "tokenizer_config.json": json.dumps(config, indent=2).encode()}


def check_target(hf_dir: str) -> None:
    """ExportError unless hf_dir is absent or an empty folder: an export never overwrites anything."""
    if os.path.exists(hf_dir) and not (os.path.isdir(hf_dir) and not os.listdir(hf_dir)):
        raise ExportError(f"{hf_dir} exists and is not an empty folder; choose another --hf_dir")


def safetensors_writer() -> Callable[..., None]:
    """safetensors' save_file (an optional package: imported here, before any work is done)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError("writing model.safetensors needs the optional package: pip install safetensors") from None
    return save_file


def write_folder(hf_dir: str, config: dict, weights: dict[str, torch.Tensor], files: dict[str, bytes],
                 save_file: Callable[..., None]) -> None:
    """config.json, model.safetensors (written by save_file) and `files`, into hf_dir by
    runfiles.replacing: a temporary folder beside it, renamed to it at the end. hf_dir appears whole
    or not at all, rename(2) replaces only an absent or empty folder, so one filled meanwhile is
    never overwritten, and a failed write (disk full: safetensors' error or an OSError) is one line
    (WriteError) that leaves nothing behind."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(hf_dir)), exist_ok=True)
    except OSError as e:
        raise WriteError(f"cannot write beside {hf_dir} ({reason(e)})") from None
    with replacing(hf_dir, folder=True) as tmp:
        # metadata "pt": what save_pretrained writes, and what transformers checks the file for
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name, content in {"config.json": json.dumps(config, indent=2).encode(), **files}.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(content)
        readable_as_umask_says(tmp)


def readable_as_umask_says(folder: str) -> None:
    """The permissions a plain mkdir and open would have given: mkdtemp makes its folder private
    (0700) and safetensors its file 0600, but an exported model is meant to be shared and served."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)


# ----------------------------------------------------------------------------------------------
# Checks: what cropping changed, and the folder loaded back

def policy_model(checkpoint: dict) -> GPT:
    """Our model as exported: the checkpoint's, without its value head (all rows kept)."""
    args = {**checkpoint["model_args"], "value_head": False}
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("value_head.")}
    return model_from_checkpoint({"model_args": args, "model": state}).eval()


def sample_sequences(checkpoint: dict, block_size: int, n: int = 4) -> tuple[list[list[int]], str]:
    """Up to n token sequences to measure on, and what they are: the first val examples of the
    checkpoint's data, or, where there is none to read (moved files, a GPT-2 imported but not
    trained), seeded random tokens."""
    why = "the checkpoint names no data"
    if "data_spec" in checkpoint:
        try:
            val = load_dataset(checkpoint["data_spec"], block_size, Vocab.from_state(checkpoint["vocab"])).val[:n]
            return [item.tokens[:block_size].tolist() for item in val], f"{len(val)} val sequences of its data"
        except UserError as e:
            why = f"its data could not be read: {first_line(e)}"
    ids = torch.randint(0, GPT2_VOCAB, (n, block_size), generator=torch.Generator().manual_seed(0))
    return ids.tolist(), f"{n} random sequences; {why}"


@torch.no_grad()
def padding_shift(model: GPT, sequences: list[list[int]], rows: int) -> float:
    """The largest change cropping the padding rows makes to a real token's log-probability,
    log pi(a|s) = Q(s,a) - logsumexp Q(s,.): the same at every real token of a state, and equal to
    logsumexp over all rows - logsumexp over the first `rows`, at most log(1 + the padding rows'
    share of the probability)."""
    shift = 0.0
    for ids in sequences:
        logits = model(torch.tensor([ids])).double()
        shift = max(shift, float((logits.logsumexp(-1) - logits[..., :rows].logsumexp(-1)).max()))
    return shift


@torch.no_grad()
def round_trip(hf_dir: str, model: GPT, sequences: list[list[int]], rows: int) -> tuple[float, float]:
    """transformers' GPT2LMHeadModel loaded from hf_dir against our model (without its value head)
    on the same token ids: the largest |difference| of their logits over the kept rows, and the
    largest |logit|."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging
    logging.disable_progress_bar()  # its per-tensor loading bar: our lines say what was done
    theirs = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    worst = largest = 0.0
    for ids in sequences:
        x = torch.tensor([ids])
        ours = model(x)[..., :rows]
        worst = max(worst, float((theirs(x).logits - ours).abs().max()))
        largest = max(largest, float(ours.abs().max()))
    return worst, largest


def check(hf_dir: str, checkpoint: dict, rows: int) -> int:
    """Print what cropping changed and how the loaded folder compares; 1 if its logits are off."""
    model = policy_model(checkpoint)
    sequences, what = sample_sequences(checkpoint, model.config.block_size)
    if model.config.vocab_size > rows:
        print(f"cropping the padding rows changes a real token's log-probability by at most "
              f"{padding_shift(model, sequences, rows):.2e} (on {what})")
    try:
        import transformers  # noqa: F401  (only to know whether the check can run)
    except ImportError:
        print("transformers is not installed: the folder was not loaded back (pip install transformers)")
        return 0
    worst, largest = round_trip(hf_dir, model, sequences, rows)
    print(f"loaded back with transformers' GPT2LMHeadModel: max |logit difference| {worst:.2e} "
          f"(logits up to {largest:.1f}; on {what})")
    if worst > 1e-4 * (1 + largest):  # float32 rounding of a different summation order is ~1e-6 relative
        print(f"export.py: error: {hf_dir}'s logits differ from ours by {worst:.2e}; please report it",
              file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------

def export(args: argparse.Namespace) -> int:
    check_target(args.hf_dir)
    save_file = safetensors_writer()
    checkpoint = load_checkpoint(args.ckpt)
    rows = exported_rows(checkpoint, args.ckpt)
    config = GPTConfig(**checkpoint["model_args"])
    write_folder(args.hf_dir, config_to_hf(config, rows, eos_id=GPT2_VOCAB - 1),
                 weights_to_hf(checkpoint["model"], rows), tokenizer_files(config.block_size), save_file)
    gelu = "tanh" if config.gelu_approximate == "tanh" else "exact"
    layout = f"{'biases' if config.bias else 'no biases'}, {gelu} GELU"
    print(f"wrote {args.hf_dir}: {config.n_layer} layers, {config.n_embd} wide, {rows} tokens, "
          f"{config.block_size} positions ({layout}), from {args.ckpt}")
    for line in notes(config, rows):
        print(f"note: {line}")
    return 0 if args.no_check else check(args.hf_dir, checkpoint, rows)


def main(argv: list[str] | None = None) -> int:
    return run_main("export.py", lambda: export(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
