"""The run machinery: skip this file on a first reading.

The lesson (model.py, iqlearn.py, train.py) calls what is here without explaining it: turning a
config dataclass into command-line flags, the error a user sees as one line, device and precision,
processes under torchrun, what a training step needs in memory, and the files a run leaves behind:
checkpoints written atomically and durably, resuming one, the lock that keeps two runs out of one
out_dir, and the stop signals (SIGINT, SIGTERM) that save before exiting.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import math
import os
import signal
import sys
import typing
from dataclasses import field, fields

import torch
import torch.distributed as dist

from errors import CheckpointError, Parser, UserError  # noqa: F401  (every script takes them from here)
from model import GPT, GPTConfig


# ----------------------------------------------------------------------------------------------
# User errors and flags

def knob(default, help: str, flag: str | None = None, at_least: float | None = None, **argparse_options):
    """A configuration field: its default, its --help text, its flag where that is not --name, and
    the smallest value it takes where there is one (check_at_least)."""
    return field(default=default, metadata={"help": help, "flag": flag, "at_least": at_least, **argparse_options})


def check_at_least(config) -> None:
    """UserError for the first field below its knob's `at_least`."""
    for f in fields(config):
        bound, value = f.metadata.get("at_least"), getattr(config, f.name)
        if bound is not None and value is not None and value < bound:
            raise UserError(f"{flag_of(type(config), f.name)} must be >= {bound}, got {value}")


def flag_of(config_class: type, name: str) -> str:
    """The command-line flag of a config field: --name, or the one its knob names (--lambda)."""
    return "--" + (config_class.__dataclass_fields__[name].metadata.get("flag") or name)


def config_parser(config_class: type, prog: str, description: str) -> Parser:
    """One flag per field of a dataclass made of knobs. The parser has no defaults
    (argument_default=SUPPRESS), so the namespace it returns holds exactly the flags given; --help
    shows the dataclass's defaults."""
    p = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    for f in fields(config_class):
        options = {k: v for k, v in f.metadata.items() if k not in ("help", "flag", "at_least")}
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
    """cuda, else mps, else cpu; or the device the flag names, if it works here (ValueError if not)."""
    if flag != "auto":
        try:
            torch.empty(0, device=flag)
        except Exception as e:  # unknown name, no such backend in this build, no such GPU
            raise ValueError(f"--device {flag} is not usable here ({str(e).splitlines()[0]})") from None
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
    try:
        device = pick_device(device_flag)
    except ValueError as e:
        raise UserError(str(e)) from None
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
# Checkpoints: one file, written atomically and durably, read back with a clear error when it is not one.

CHECKPOINT_KEYS = ("model", "model_args", "config", "vocab", "iter_num")


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt.pt")


def best_path(out_dir: str) -> str:
    return os.path.join(out_dir, "best.pt")


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, then fsync the directory.

    The rename is atomic: a reader (sample.py) opens either the previous file or the new one, never
    a part, and a crash mid-write leaves the previous one. The fsyncs make it durable: without the
    first, a power loss soon after the rename can leave an empty or truncated file under the new
    name; without the second, the rename itself may not survive. A failed write (disk full,
    permission denied) removes the temporary file and raises OSError; `path` is untouched."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # OSError, or an interrupt: never leave a partial file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str, device: str = "cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refusal: all "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    return checkpoint




def load_weights(model: GPT, weights: dict) -> None:
    """Load a checkpoint's weights into `model`: every tensor must fit, with one exception, handled
    here: a model with a value head accepts weights without one (an MLE run, GPT-2), and its head
    keeps its zero initialisation. CheckpointError, in one line, for anything else that does not fit."""
    own = model.state_dict()
    wrong = [k for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"the checkpoint's {wrong[0]} is {tuple(weights[wrong[0]].shape)}, this model's "
                              f"{tuple(own[wrong[0]].shape)}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("value_head.")]
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's weights do not fit this model (missing "
                              f"{', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'})")


def model_from_checkpoint(checkpoint: dict) -> GPT:
    """The model a checkpoint describes (model_args), with its weights."""
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    load_weights(model, checkpoint["model"])
    return model


def build_model(c, vocab_size: int, source: dict | None) -> GPT:
    """The model a run's configuration describes (block_size, n_layer, n_head, n_embd, dropout,
    value_head), with the weights of `source` (a checkpoint) if there is one. What no flag sets
    (GPT-2's biases and GELU) is the source's."""
    flags = dict(vocab_size=vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                 n_embd=c.n_embd, dropout=c.dropout, value_head=c.value_head)
    model = GPT(GPTConfig(**{**(source["model_args"] if source else {}), **flags}))
    if source:
        load_weights(model, source["model"])
    return model


def write_checkpoint(checkpoint: dict, out_dir: str, also_best: bool, rank: int, world: int, device: str) -> bool:
    """Rank 0 writes out_dir/ckpt.pt (and best.pt) with save_checkpoint; every process returns
    whether that worked. A failed write says why in one line; the previous files stay as they were."""
    failed = False
    if rank == 0:
        for path in [checkpoint_path(out_dir)] + [best_path(out_dir)] * also_best:
            try:
                save_checkpoint(checkpoint, path)
            except OSError as e:
                print(f"error: could not write {path} at iter {checkpoint['iter_num']} ({e.strerror or e}); the "
                      "previous one is kept; stopping: make room or fix permissions, then --resume", file=sys.stderr)
                failed = True
                break
    return not agreed([float(failed)], device, world)[0]


def training_checkpoint(model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batches,
                        config, vocab: dict, data_spec: dict, iter_num: int, best_val_loss: float, **extra) -> dict:
    """One checkpoint holds what sample.py needs to rebuild the model and its data (weights,
    model_args, config, vocab, data_spec), and what --resume needs to continue bit for bit
    (RESUME_KEYS: optimizer and scaler state, data position, RNG states, best val loss), plus what
    a script adds in `extra` (online IQLearn: its current policy batch)."""
    return {"model": model.state_dict(), "model_args": dataclasses.asdict(model.config),
            "config": dataclasses.asdict(config), "vocab": vocab, "data_spec": data_spec, "iter_num": iter_num,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "data_position": batches.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "best_val_loss": best_val_loss, **extra}


def restore_training(checkpoint: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     batches) -> None:
    """Load a resumed checkpoint's optimizer, scaler, data position and RNG states."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    batches.load_state_dict(checkpoint["data_position"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


# What --resume needs beyond any checkpoint's weights and configuration.
RESUME_KEYS = ("optimizer", "scaler", "data_position", "rng", "best_val_loss")


def resumed_config(checkpoint: dict, config, given: set[str], fixed: tuple[str, ...], per_invocation: tuple[str, ...]):
    """A resumed run keeps its checkpoint's configuration, except the flags given now (`given`).
    Those that would change the model or its data (`fixed`) must agree with the checkpoint; those
    that say where and how this invocation runs (`per_invocation`: out_dir, device) are never
    the checkpoint's. A field the checkpoint's configuration does not have keeps its default."""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"the checkpoint cannot be resumed (it has no {', '.join(missing)})")
    names = {f.name for f in fields(config)}
    saved = {k: v for k, v in checkpoint["config"].items() if k in names and k not in per_invocation}
    for k in fixed:
        if k in given and getattr(config, k) != saved.get(k):
            raise UserError(f"{flag_of(type(config), k)} {getattr(config, k)} does not fit the checkpoint "
                            f"({saved.get(k)})")
    return dataclasses.replace(config, **{k: v for k, v in saved.items() if k not in given})


# The fields of a run's configuration that fix its model's shape: --init_from sets them.
MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd")


def starting_point(c, given: set[str], fixed: tuple[str, ...], per_invocation: tuple[str, ...]
                   ) -> tuple[typing.Any, dict | None, dict | None]:
    """Where a run starts, for a configuration with out_dir, resume, init_from, value_head and the
    MODEL_FIELDS: the configuration it trains with, the checkpoint it resumes (or None), and the
    one whose weights and vocabulary it starts from: the resumed one, --init_from's, or None."""
    ckpt_path = checkpoint_path(c.out_dir)
    if c.resume and c.init_from:
        raise UserError("--resume and --init_from exclude each other")
    if c.resume:  # (a resumed fine-tuning run's config names its --init_from: where it began)
        resumed = load_checkpoint(ckpt_path)
        return resumed_config(resumed, c, given, fixed, per_invocation), resumed, resumed
    if os.path.exists(ckpt_path):
        raise UserError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                        "--out_dir (a new run would overwrite it)")
    if c.init_from:
        source = init_source(c.init_from, c.block_size)
        return adopt_architecture(c, given, source), None, source
    return c, None, None


def init_source(init_from: str, block_size: int) -> dict:
    """What --init_from names, as a checkpoint to start from: one of ours (a ckpt.pt path), or
    GPT-2's published weights and vocabulary (gpt2.py; the position table cropped to block_size)."""
    from gpt2 import GPT2_SIZES, gpt2_checkpoint  # here, not at the top: gpt2.py imports this module
    if init_from in GPT2_SIZES or os.path.isdir(init_from):
        return gpt2_checkpoint(init_from, block_size)
    if not os.path.isfile(init_from):
        raise CheckpointError(f"--init_from {init_from} is neither a checkpoint file, a GPT-2 "
                              f"({', '.join(GPT2_SIZES)}) nor a folder")
    return load_checkpoint(init_from)


def adopt_architecture(c, given: set[str], source: dict):
    """--init_from: the architecture is the source's (a flag that disagrees is an error). A value
    head can be added to a source without one (it starts at zero); a source's head stays."""
    args = source["model_args"]
    for k in MODEL_FIELDS:
        if k in given and getattr(c, k) != args[k]:
            raise UserError(f"{flag_of(type(c), k)} {getattr(c, k)} does not fit {c.init_from} ({args[k]})")
    return dataclasses.replace(c, **{k: args[k] for k in MODEL_FIELDS},
                               value_head=c.value_head or args.get("value_head", False))


# ----------------------------------------------------------------------------------------------
# One run per out_dir, and stop signals

class OutDirLock:
    """An exclusive flock on out_dir/train.lock, which names the holder's pid, for the life of a run.
    The OS releases a flock when its process ends, however it ends, so a crash never leaves a stale
    lock; release() also removes the file."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, "train.lock")
        try:
            os.makedirs(out_dir, exist_ok=True)
            self._lock(out_dir)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except OSError as e:  # not a folder, no permission, a filesystem without locks
            raise UserError(f"cannot lock --out_dir {out_dir} ({e.strerror or e})") from None

    def _lock(self, out_dir: str) -> None:
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: a holder's pid stays
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(self.fd, 32).decode().strip() or "unknown"
                os.close(self.fd)
                raise UserError(f"{out_dir} is in use by another run (pid {holder}); wait for it to end "
                                "or choose another --out_dir") from None
            if self._still_there():
                return
            os.close(self.fd)  # its holder removed the file between our open and our lock: lock the new one

    def _still_there(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self.fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # while holding it: a run that opened this file sees it gone and retries
        os.close(self.fd)


@contextlib.contextmanager
def holding_out_dir(out_dir: str, rank: int, world: int, device: str):
    """Rank 0 holds out_dir's lock while the block runs. If another run holds it, every process
    raises UserError (rank 0's names that run's pid) before anything in out_dir is touched."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = OutDirLock(out_dir)
        except UserError as e:
            error = e
    if agreed([float(error is not None)], device, world)[0]:
        raise error or UserError(f"{out_dir} is in use by another run (rank 0 names it)")
    try:
        yield
    finally:
        if lock:
            lock.release()


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (how SLURM, Kubernetes, `timeout` and cloud preemption stop a job)
    only note the first signal's number (`signum`); the training loop shares it with every process
    (`StopSignals.agree`) and saves at that iteration boundary, then exits with 128 + the number (130,
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

    def agree(self, non_finite: bool, device: str, world: int) -> tuple[bool, int]:
        """Whether the loss was non-finite on any process, and the stop signal any process has noted
        (0: none), in one all-reduce: every process then skips the same update and stops at the
        same iteration."""
        non_finite, signum = agreed([float(non_finite), float(self.signum)], device, world)
        return bool(non_finite), int(signum)
