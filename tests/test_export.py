"""export.py: our checkpoints as Hugging Face GPT-2 folders. The round trip is the test: transformers'
GPT2LMHeadModel loaded from the folder gives our logits (minus the value head's offset) on the same
ids, in our default layout and GPT-2's, with and without a value head; train.py --init_from's import
reads back our weights; the tokenizer is tiktoken's GPT-2 BPE; bad input is one line and writes
nothing; the commands in README.md and docs/huggingface.md run."""

import importlib.util
import os
import pathlib
import re
import shlex
import sys
from dataclasses import asdict

import pytest
import tiktoken
import torch

import export
import train
from gpt2 import GPT2_VOCAB, gpt2_checkpoint
from model import GPT, GPTConfig
from runfiles import model_from_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_PATH = pathlib.Path(ROOT)
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("safetensors") is None,
    reason="the round trip needs the optional transformers and safetensors (pip install transformers safetensors)")

# (bias, GELU, value head, padded): our default layout as a --full_vocab run has it (50,304 rows),
# GPT-2's as --init_from gpt2 has it (50,257), each with and without a value head.
LAYOUTS = {"default": (False, "none", False, True), "default+head": (False, "none", True, True),
           "gpt2": (True, "tanh", False, False), "gpt2+head": (True, "tanh", True, False)}


def checkpoint(bias: bool, gelu: str, value_head: bool, padded: bool, gpt2_ids=None) -> dict:
    """A checkpoint of a random 2-layer model. LayerNorm parameters, biases and the value head are
    pushed away from their 1 / 0 init, so an export that dropped or misplaced one would show."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50304 if padded else GPT2_VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=16,
                       bias=bias, gelu_approximate=gelu, value_head=value_head)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
        if value_head:
            model.value_head.weight.normal_(0, 1)
    return {"model": model.state_dict(), "model_args": asdict(config), "config": {}, "iter_num": 0,
            "vocab": {"gpt2_ids": gpt2_ids, "padded": padded}}


def exported(tmp_path, layout: str) -> tuple[dict, str]:
    """The layout's checkpoint, exported (without export's own check) into a fresh folder."""
    ckpt = checkpoint(*LAYOUTS[layout])
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    assert export.main(["--ckpt", str(path), "--hf_dir", str(tmp_path / "hf"), "--no_check"]) == 0
    return ckpt, str(tmp_path / "hf")


def logits_and_offset(model: GPT, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our logits and the value head's v(s) in them (0 without a head), v read off ln_f's output."""
    seen = {}
    hook = model.ln_f.register_forward_hook(lambda module, inputs, h: seen.update(h=h))
    logits = model(ids)
    hook.remove()
    return logits, model.value_head(seen["h"]) if model.value_head is not None else torch.zeros(1)


@needs_transformers
@pytest.mark.parametrize("layout", LAYOUTS)
def test_transformers_gives_our_logits(tmp_path, layout):
    from transformers import GPT2LMHeadModel
    ckpt, folder = exported(tmp_path, layout)
    theirs = GPT2LMHeadModel.from_pretrained(folder).eval()
    ours = model_from_checkpoint(ckpt).eval()
    ids = torch.randint(0, GPT2_VOCAB, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, v = logits_and_offset(ours, ids)
        hf = theirs(ids).logits
    assert hf.shape == (2, 32, GPT2_VOCAB)
    # Logits: ours minus the head's per-state offset v(s), over GPT-2's real tokens.
    difference = float((hf - (logits[..., :GPT2_VOCAB] - v)).abs().max())
    # The policy over the real tokens: softmax ignores v (the cropped padding rows renormalise it).
    policy = float((hf.log_softmax(-1) - logits[..., :GPT2_VOCAB].log_softmax(-1)).abs().max())
    print(f"{layout}: max |logit difference| {difference:.1e}, max |log-softmax difference| {policy:.1e}")
    assert difference < 1e-5 and policy < 1e-5
    if ckpt["model_args"]["value_head"]:
        assert float(v.abs().min()) > 0.01  # the head did add something, which the export left out


@needs_transformers
@pytest.mark.parametrize("layout", ["default+head", "gpt2"])
def test_init_from_the_folder_reads_back_our_weights(tmp_path, layout):
    ckpt, folder = exported(tmp_path, layout)
    back = gpt2_checkpoint(folder)  # what train.py --init_from FOLDER loads
    ours = ckpt["model"]
    for key, tensor in back["model"].items():
        if key in ours:
            expected = ours[key][:GPT2_VOCAB] if key in ("wte.weight", "lm_head.weight") else ours[key]
            assert torch.equal(tensor, expected), key
        else:  # our bias-free layout comes back with GPT-2's biases, all zero
            assert key.endswith(".bias") and not ckpt["model_args"]["bias"] and not tensor.any(), key
    assert not any(key.startswith("value_head.") for key in back["model"])
    args = {**ckpt["model_args"], "bias": True, "vocab_size": GPT2_VOCAB, "value_head": False}
    assert back["model_args"] == args


@needs_transformers
def test_transformers_greedy_generation_is_ours(tmp_path):
    """Decoding through transformers' own generate (its KV cache) from the folder of a value-head
    model continues a prompt with the tokens our generate picks: the head changes no argmax."""
    from transformers import GPT2LMHeadModel
    ckpt, folder = exported(tmp_path, "default+head")
    theirs = GPT2LMHeadModel.from_pretrained(folder)
    assert theirs.generation_config.eos_token_id == GPT2_VOCAB - 1  # from config.json: generate stops there
    prompt = torch.randint(0, GPT2_VOCAB, (1, 6), generator=torch.Generator().manual_seed(4))
    ours = model_from_checkpoint(ckpt).eval().generate(prompt.tolist(), max_new_tokens=10, temperature=0)
    theirs_new = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False)
    assert theirs_new[0, 6:].tolist() == ours[0]


@needs_transformers
def test_the_tokenizer_is_gpt2s_bpe_as_tiktoken_reads_it(tmp_path):
    from transformers import AutoTokenizer
    _, folder = exported(tmp_path, "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = "Ann has 3 bags of 4 pens.\n#### 12  naïve café, 日本語 and 1,200 tabs\t!"
    assert tokenizer(text)["input_ids"] == tiktoken.get_encoding("gpt2").encode_ordinary(text)
    assert (tokenizer.eos_token_id, tokenizer.model_max_length) == (GPT2_VOCAB - 1, 32)


def test_the_padding_shift_is_the_padding_rows_share_of_the_probability():
    model = model_from_checkpoint(checkpoint(False, "none", False, True)).eval()
    with torch.no_grad():
        model.wte.weight[GPT2_VOCAB:] *= 40  # make the 47 padding rows matter
        ids = torch.randint(0, GPT2_VOCAB, (2, 32), generator=torch.Generator().manual_seed(3))
        share = model(ids).double().softmax(-1)[..., GPT2_VOCAB:].sum(-1)
    # Cropping renormalises the real tokens' probabilities by 1 / (1 - share): log pi moves by -log(1 - share).
    expected = float((-torch.log1p(-share)).max())
    assert expected > 1e-3
    assert export.padding_shift(model, ids.tolist(), GPT2_VOCAB) == pytest.approx(expected, rel=1e-9)


@needs_transformers
def test_the_export_check_catches_a_folder_that_is_not_our_model(tmp_path, monkeypatch, capsys):
    torch.save(checkpoint(True, "tanh", True, False), tmp_path / "ckpt.pt")
    assert export.main(["--out_dir", str(tmp_path), "--hf_dir", str(tmp_path / "good")]) == 0
    assert "max |logit difference| " in capsys.readouterr().out  # on random ids: this checkpoint names no data
    real = export.weights_to_hf

    def off_by_a_bias(state, rows):  # a bug an export could have: one tensor slightly wrong
        weights = real(state, rows)
        weights["transformer.ln_f.bias"] += 0.01
        return weights

    monkeypatch.setattr(export, "weights_to_hf", off_by_a_bias)
    assert export.main(["--out_dir", str(tmp_path), "--hf_dir", str(tmp_path / "bad")]) == 1
    assert "logits differ from ours" in capsys.readouterr().err


def test_the_sequences_measured_on_are_the_checkpoints_val_data_or_random_ones(tmp_path):
    ckpt = checkpoint(False, "none", False, True)
    ids, what = export.sample_sequences(ckpt, 32)
    assert len(ids) == 4 and what == "4 random sequences; the checkpoint names no data"
    spec = {"data": str(tmp_path / "moved.jsonl"), "val_data": None, "full_vocab": True, "task": {}}
    assert "could not be read: data file not found" in export.sample_sequences({**ckpt, "data_spec": spec}, 32)[1]


# --- bad input: one line, exit 2, nothing written -----------------------------------------------

def refused(argv: list[str], capsys) -> str:
    try:
        code = export.main(argv)
    except SystemExit as e:  # a bad flag: argparse exits (errors.Parser: one line, status 2)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_compact_vocabulary_is_refused(tmp_path, capsys):
    torch.save(checkpoint(False, "none", False, False, gpt2_ids=list(range(100))), tmp_path / "ckpt.pt")
    err = refused(["--out_dir", str(tmp_path)], capsys)
    assert "compact vocabulary (100 GPT-2 tokens" in err and "--full_vocab or --init_from gpt2" in err
    assert not os.path.exists(f"{tmp_path}_hf") and os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_non_empty_folder_or_a_file_is_never_overwritten(tmp_path, capsys):
    torch.save(checkpoint(True, "tanh", False, False), tmp_path / "ckpt.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for target in ("hf", "file"):
        err = refused(["--ckpt", str(tmp_path / "ckpt.pt"), "--hf_dir", str(tmp_path / target)], capsys)
        assert "is not an empty folder" in err
    assert os.listdir(tmp_path / "hf") == ["keep.txt"] and (tmp_path / "file").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "file", "hf"]


def test_without_safetensors_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    torch.save(checkpoint(True, "tanh", False, False), tmp_path / "ckpt.pt")
    for name in ("safetensors", "safetensors.torch"):
        monkeypatch.setitem(sys.modules, name, None)
    err = refused(["--ckpt", str(tmp_path / "ckpt.pt"), "--hf_dir", str(tmp_path / "hf")], capsys)
    assert "pip install safetensors" in err and os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_missing_checkpoint_and_a_bad_flag_are_one_line(tmp_path, capsys):
    assert "no checkpoint at" in refused(["--out_dir", str(tmp_path / "nothing")], capsys)
    assert "unrecognized arguments: --bias" in refused(["--bias"], capsys)


# --- the documented commands -------------------------------------------------------------------

def documented_commands() -> list[list[str]]:
    """Every `python export.py ...` and `python examples/hf_iqlearn.py ...` line of README.md's
    "Use it with Hugging Face" section and of docs/huggingface.md, split as a shell splits it, once
    each, the exports first (the example trains on what they write)."""
    readme, page = ((ROOT_PATH / name).read_text(encoding="utf-8") for name in ("README.md", "docs/huggingface.md"))
    section = readme.split("\n## Use it with Hugging Face\n", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^python (?:export\.py|examples/hf_iqlearn\.py) [^\n#]*", section + "\n" + page,
                       re.MULTILINE)
    commands = list(dict.fromkeys(line.strip() for line in lines))  # a command both pages give runs once
    return sorted((shlex.split(c) for c in commands), key=lambda c: c[1] != "export.py")  # exports first


@needs_transformers
def test_the_documented_commands_run(tmp_path, monkeypatch, capsys):
    """export.py on a checkpoint a tiny train.py --full_vocab run wrote, then the example's loop on
    the folder, with the flags the pages give (the out_dir a page names is this tiny run; the loop
    runs 2 steps of 2 rows, not the page's)."""
    commands = documented_commands()
    assert {c[1] for c in commands} == {"export.py", "examples/hf_iqlearn.py"}
    monkeypatch.chdir(tmp_path)
    example = importlib.util.spec_from_file_location("hf_iqlearn", os.path.join(ROOT, "examples", "hf_iqlearn.py"))
    hf_iqlearn = importlib.util.module_from_spec(example)
    example.loader.exec_module(hf_iqlearn)
    tiny = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--batch_size", "2", "--block_size", "96",
            "--task_train", "50", "--eval_problems", "0", "--eval_iters", "1", "--max_iters", "1", "--full_vocab"]
    for out_dir in {c[c.index("--out_dir") + 1] for c in commands if "--out_dir" in c}:
        assert train.main([*tiny, "--out_dir", out_dir]) == 0
    for command in commands:
        is_export = command[1] == "export.py"
        main, fast = (export.main, []) if is_export else (hf_iqlearn.main, ["--steps", "2", "--batch_size", "2"])
        capsys.readouterr()
        assert main(command[2:] + fast) == 0, command  # the example's loop shortened: a later flag wins
        out = capsys.readouterr().out
        if is_export and "--no_check" not in command:
            assert "max |logit difference|" in out and "padding rows changes" in out
        if not is_export:
            assert re.search(r"step \d+: loss [\d.]+, nll [\d.]+, td [\d.]+", out)
