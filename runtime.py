"""The run machinery: skip this file on a first reading.

The lesson (model.py, iqlearn.py, train.py) calls what is here without explaining it: turning a
config dataclass into command-line flags, device and precision, processes under torchrun, what a
training step needs in memory, and the stop signals (SIGINT, SIGTERM) that save before exiting.
The files a run leaves behind (checkpoints, resuming one, the out_dir lock, the log) are
runfiles.py; the error a user sees as one line is errors.py.
"""

import argparse
import contextlib
import math
import os
import signal
import sys
import typing
from dataclasses import field, fields

import torch
import torch.distributed as dist

from errors import Parser, UserError
from model import GPTConfig


# ----------------------------------------------------------------------------------------------
# Flags

# The seeds every generator here takes: torch.manual_seed's range and numpy's (non-negative).
MAX_SEED = 2**64 - 1


def knob(default, help: str, flag: str | None = None, at_least: float | None = None, at_most: float | None = None,
         **argparse_options):
    """A configuration field: its default, its --help text, its flag where that is not --name, and
    the smallest and largest values it takes where there are such (check_ranges)."""
    return field(default=default, metadata={"help": help, "flag": flag, "at_least": at_least, "at_most": at_most,
                                            **argparse_options})


def check_ranges(config) -> None:
    """UserError for the first field outside its knob's `at_least`..`at_most`, or a float field that
    is not finite (inf or nan: no setting of a run means either)."""
    for f in fields(config):
        low, high, value = f.metadata.get("at_least"), f.metadata.get("at_most"), getattr(config, f.name)
        flag = flag_of(type(config), f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if low is not None and value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
        if high is not None and value is not None and value > high:
            raise UserError(f"{flag} must be <= {high}, got {value}")


def flag_of(config_class: type, name: str) -> str:
    """The command-line flag of a config field: --name, or the one its knob names (--lambda)."""
    return "--" + (config_class.__dataclass_fields__[name].metadata.get("flag") or name)


def config_parser(config_class: type, prog: str, description: str) -> Parser:
    """One flag per field of a dataclass made of knobs. The parser has no defaults
    (argument_default=SUPPRESS), so the namespace it returns holds exactly the flags given; --help
    shows the dataclass's defaults."""
    p = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    for f in fields(config_class):
        options = {k: v for k, v in f.metadata.items() if k not in ("help", "flag", "at_least", "at_most")}
        if f.type is bool:
            options["action"] = "store_true"
        else:  # `int | None` takes an int
            options["type"] = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        p.add_argument(flag_of(config_class, f.name), dest=f.name, help=f"{f.metadata['help']} (default: {f.default})",
                       **options)
    return p


def parse_config(config_class: type, argv: list[str] | None, prog: str, description: str) -> tuple[typing.Any, set[str]]:
    """The configuration (the defaults, overridden by the flags given), and the names of the fields
    whose flags were given on the command line."""
    given = vars(config_parser(config_class, prog, description).parse_args(argv))
    return config_class(**given), set(given)


# ----------------------------------------------------------------------------------------------
# Device and precision

def pick_device(flag: str = "auto") -> str:
    """cuda, else mps, else cpu; or the device the flag names, if it computes here: a sum on it
    comes back right (UserError if not: an unknown name, a backend this build lacks, no such GPU,
    or a device that holds no numbers, such as meta)."""
    if flag != "auto":
        try:
            works = (torch.ones(2, device=flag).sum() + 1).item() == 3
        except Exception as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--device {flag} is not usable here ({reason})") from None
        if not works:
            raise UserError(f"--device {flag} is not usable here (1 + 1 + 1 is not 3 on it)")
        return flag
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


DTYPES = ("float32", "bfloat16", "float16")   # --dtype's choices besides auto


def pick_dtype(flag: str, device: str) -> torch.dtype:
    """The autocast precision: bf16 on CUDA where supported, else fp16 (which needs a GradScaler);
    float32 elsewhere; or the one the flag names."""
    if flag != "auto":
        return getattr(torch, flag)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32




def autocast(device: str, dtype: torch.dtype):
    """Mixed precision for the forward pass: torch.autocast in dtype, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def grad_scaler(device: str, dtype: torch.dtype) -> torch.amp.GradScaler:
    """fp16's loss scaling (its small gradients would underflow); for any other dtype a scaler that
    passes everything through unchanged."""
    return torch.amp.GradScaler(device.split(":")[0], enabled=dtype == torch.float16)


def cosine_lr(iter_num: int, learning_rate: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warm-up over warmup_iters, then cosine decay from learning_rate to min_lr, reached at
    decay_iters and kept after: a function of the iteration only, so a resumed run follows the same
    schedule as an uninterrupted one (train.py's lr_at and gail.py call it with their flags)."""
    if iter_num < warmup_iters:
        return learning_rate * (iter_num + 1) / warmup_iters
    if iter_num >= decay_iters:
        return min_lr
    progress = (iter_num - warmup_iters) / max(decay_iters - warmup_iters, 1)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def setup_distributed(device_flag: str) -> tuple[int, int, str]:
    """(rank, world size, device). Under torchrun: one process per GPU (NCCL), or gloo on CPU."""
    device = pick_device(device_flag)
    if "RANK" not in os.environ:
        return 0, 1, device
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def agreed(values: list[float], device: str, world: int) -> list[float]:
    """Each value's maximum over all processes, by one all-reduce: every process then takes the same
    branch (one that stopped alone would leave the others waiting in their next collective)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


# ----------------------------------------------------------------------------------------------
# Memory of a training step, on paper

def step_memory(config: GPTConfig, rows: int, seq_len: int, half: bool) -> dict[str, int]:
    """Bytes of one training step (offline IQLearn or MLE through iqlearn_loss, AdamW, dropout 0,
    fused attention) at its peak, by part. half: 16-bit autocast (bf16 or fp16), else float32.

      weights_adamw  fp32 weights and AdamW's two moments, held between steps: 12 bytes a parameter
      activations    what autograd keeps for backward, per token: in each block LN input, LN
                     output, q/k/v, attention output, LN input, LN output, MLP hidden before and
                     after GELU: 16 * n_embd floats in float32; with autocast the LN inputs stay fp32
                     and the rest is 16-bit copies: 36 * n_embd bytes. Plus each block's LayerNorm
                     mean/rstd and attention's log-sum-exp, and ln_f's input and output once. With
                     autocast also the 16-bit copy of every Linear weight (lm_head's too).
      logits         the [rows, T, V] buffers around the loss: 8 bytes an entry in float32 (the
                     logits and logsumexp's temporary, later the logits and their gradient); 10 with
                     autocast (16-bit logits, their float32 copy, the temporary)
      gradients      4 bytes a parameter, filled in while backward frees the activations; at the end
                     two more copies of the tied embedding's, whose two contributions are summed (one
                     fewer is live with autocast: there this part is an upper bound)
      peak           weights_adamw + the larger of activations + logits (at the loss) and gradients
                     (at the end of backward)

    Not counted: the CUDA context and allocator slack (on a GPU, add about 1 GiB), dropout masks.
    bench.py compares this with the peak the CPU profiler records."""
    counts = param_counts(config)
    n_params = sum(counts.values())
    tokens, h, V = rows * seq_len, config.n_embd, config.vocab_size
    per_block = (36 if half else 64) * h + 2 * 2 * 4 + 4 * config.n_head  # + LN stats, attention lse
    parts = {"weights_adamw": 12 * n_params,
             "activations": tokens * (config.n_layer * per_block + (6 if half else 8) * h)
                            + (2 * (counts["linear"] + counts["embedding"]) if half else 0),
             "logits": tokens * V * (10 if half else 8),
             "gradients": 4 * n_params + 8 * counts["embedding"]}
    parts["peak"] = parts["weights_adamw"] + max(parts["activations"] + parts["logits"], parts["gradients"])
    return parts


def param_counts(config: GPTConfig) -> dict[str, int]:
    """Parameters of GPT(config) by kind, counted without building it (gpt2-xl has 1.6 billion):
    the token embedding (tied with lm_head, so once), the position table, the LayerNorms, and
    every Linear's weight and bias but lm_head's (it is the embedding)."""
    h, L, b = config.n_embd, config.n_layer, int(config.bias)
    per_block = (3 * h * h + 3 * h * b) + (h * h + h * b) + (4 * h * h + 4 * h * b) + (4 * h * h + h * b)
    return {"embedding": config.vocab_size * h, "positions": config.block_size * h,
            "norms": (2 * L + 1) * h * (1 + b),
            "linear": L * per_block + (h + 1 if config.value_head else 0)}



def print_step_memory(config: GPTConfig, rows: int, seq_len: int, device: str, dtype: torch.dtype) -> None:
    """What a training step of `rows` sequences of seq_len tokens needs on paper (step_memory),
    against the GPU's memory: a model that cannot fit says so before the first step, not with an
    OOM."""
    need = step_memory(config, rows, seq_len, half=dtype != torch.float32)
    total = torch.cuda.get_device_properties(device).total_memory

    def gib(n: int) -> str:
        return f"{n / 2**30:.1f} GiB"

    print(f"memory: a step needs about {gib(need['peak'])} on paper (weights and AdamW "
          f"{gib(need['weights_adamw'])}, activations {gib(need['activations'])}, logits "
          f"{gib(need['logits'])}) of the {gib(total)} on {device}")
    if need["peak"] > total:
        print("note: that is more than this GPU has; lower --batch_size (raise --grad_accum to keep "
              "the batch) or --block_size", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Stop signals

class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (how SLURM, Kubernetes, `timeout` and cloud preemption stop a job)
    only note the first signal's number (`signum`); the training loop shares it with every process
    (`agreed`, with its other votes) and saves at that iteration boundary, then exits with 128 + the number (130,
    143). The handler does nothing else, so a second signal while the checkpoint is written cannot
    interrupt the write (SIGKILL still can; the temporary file and rename keep the previous
    checkpoint whole). On leaving the `with` block the previous handlers come back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "StopSignals":
        self.signum = 0
        self.previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _note(self, signum, frame) -> None:
        self.signum = self.signum or signum
