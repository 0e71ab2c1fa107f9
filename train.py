"""Train a GPT with offline IQLearn (nll + lambda * td); --lambda 0 is plain MLE.

    python train.py --lambda 0.5                     # built-in GSM8K-style task, CPU or GPU
    python train.py --data my.jsonl --lambda 0.1     # {"prompt","response"} or {"question","answer"}
    python train.py --data input.txt                 # running text
    python train.py --init_from gpt2 --data gsm8k/train.jsonl --block_size 512   # fine-tune GPT-2
    torchrun --standalone --nproc_per_node=4 train.py --lambda 0.5   # DDP

Every flag and its default: python train.py --help. A run writes out_dir/ckpt.pt (at each eval, at
the end and when stopped, atomically and durably), appends its eval numbers to out_dir/log.jsonl,
and holds out_dir/train.lock while it runs; --resume continues it. SIGINT (Ctrl-C) and SIGTERM
(SLURM, Kubernetes, `timeout`) save at the next iteration boundary and exit 130 and 143.

The file reads top to bottom: the configuration (one dataclass, its flags derived from it), devices
and processes, the loss and evaluation, the run's state, checkpoints and out_dir lock, then the run
itself: `setup` turns the configuration into a model, optimizer, data and starting state,
`train_step` is one iteration, and `train_loop` calls it, evaluates and saves.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import signal
import sys
import time
import typing
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data import IGNORE, Batches, DataError, Dataset, Item, Vocab, collate, is_correct, load_dataset
from iqlearn import check_coefficients, iqlearn_loss, iqlearn_online_loss
from model import (GPT, GPT2_SIZES, CheckpointError, GPTConfig, load_checkpoint, load_weights, pick_device,
                   pick_dtype, save_checkpoint, step_memory)
from task import TaskConfig


# ----------------------------------------------------------------------------------------------
# Configuration: every flag, with its default

def knob(default, help: str, flag: str | None = None, **argparse_options):
    """A configuration field: its default, its --help text, and its flag where that is not --name."""
    return field(default=default, metadata={"help": help, "flag": flag, **argparse_options})


@dataclass
class TrainConfig:
    # the objective
    lam: float = knob(0.5, "weight of the TD regulariser; 0 = MLE", flag="lambda")  # lambda: a Python keyword
    gamma: float = knob(1.0, "discount in r_t = Q(s_t,a_t) - gamma V(s_t+1)")
    entropy_coef: float = knob(0.0, "subtract this times the mean policy entropy")
    mixin: float = knob(0.0, "online IQLearn: the fraction alpha of self-generated data; 0 = offline")
    sample_every: int = knob(1, "online: draw new policy samples every this many iterations")
    # data
    data: str | None = knob(None, ".jsonl pairs or .txt text; default: the built-in task")
    val_data: str | None = knob(None, "validation file; default: a held-out slice of --data")
    full_vocab: bool = knob(False, "all GPT-2 ids instead of the data's own")
    task_steps: int = knob(3, "built-in task: at most this many steps (2-4)")
    task_max_value: int = knob(50, "built-in task: size of starting amounts")
    task_train: int = knob(20000, "built-in task: training problems")
    # model
    block_size: int = knob(128, "longest sequence in tokens")
    n_layer: int = knob(4, "transformer blocks")
    n_head: int = knob(8, "attention heads")
    n_embd: int = knob(256, "width of the residual stream")
    dropout: float = knob(0.0, "dropout probability while training")
    value_head: bool = knob(False, "add a scalar value head: Q = logits + v(h), so the TD term need not "
                                   "bend the policy")
    # optimisation
    max_iters: int = knob(1200, "total iterations (a resumed run continues to it)")
    lr_decay_iters: int | None = knob(None, "length of the cosine schedule; default max_iters")
    batch_size: int = knob(32, "examples per micro-step per process")
    grad_accum: int = knob(1, "micro-steps per iteration")
    learning_rate: float = knob(2e-3, "peak learning rate (AdamW)")
    min_lr: float = knob(2e-4, "learning rate at the end of the cosine decay")
    warmup_iters: int = knob(100, "linear learning-rate warm-up")
    weight_decay: float = knob(0.1, "AdamW weight decay of matrices")
    grad_clip: float = knob(1.0, "clip the gradient norm to this; 0 = off")
    # evaluation and output
    eval_interval: int = knob(200, "evaluate and checkpoint every this many iterations")
    eval_iters: int = knob(10, "val batches per evaluation")
    eval_problems: int = knob(200, "val problems for greedy accuracy")
    keep_best: bool = knob(False, "also write out_dir/best.pt at each evaluation whose val loss is the lowest yet")
    out_dir: str = knob("out", "where ckpt.pt and log.jsonl go")
    resume: bool = knob(False, "continue from out_dir/ckpt.pt")
    init_from: str | None = knob(None, "start from these weights: a ckpt.pt (e.g. an MLE model), or GPT-2: "
                                       f"{', '.join(GPT2_SIZES)} or a local Hugging Face GPT-2 folder")
    # system
    device: str = knob("auto", "auto (cuda, mps, cpu) or a torch device")
    dtype: str = knob("auto", "autocast precision; auto: bf16 (else fp16) on CUDA, float32 elsewhere",
                      choices=["auto", "float32", "bfloat16", "float16"])
    compile: bool = knob(False, "torch.compile the model")
    seed: int = knob(1337, "initialisation and data order")


FIELDS = {f.name: f for f in fields(TrainConfig)}


def flag(name: str) -> str:
    """The command-line flag of a TrainConfig field: --name, or the one its knob names (--lambda)."""
    return "--" + (FIELDS[name].metadata["flag"] or name)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    """One flag per TrainConfig field. The parser has no defaults (argument_default=SUPPRESS), so
    the namespace it returns holds exactly the flags given; --help shows the dataclass's defaults."""
    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        options = {k: v for k, v in f.metadata.items() if k not in ("help", "flag")}
        if f.type is bool:
            options["action"] = "store_true"
        else:  # `int | None` takes an int
            options["type"] = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        p.add_argument(flag(f.name), dest=f.name, help=f"{f.metadata['help']} (default: {f.default})", **options)
    return p


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, set[str]]:
    """The configuration (the defaults, overridden by the flags given), and the names of the fields
    whose flags were given on the command line."""
    given = vars(build_parser().parse_args(argv))
    return dataclasses.replace(TrainConfig(), **given), set(given)


def check_config(c: TrainConfig) -> None:
    # The objective's coefficients have one range check, iqlearn's; here it names our flags.
    for name, coefficient in (("lam", {"lam": c.lam}), ("gamma", {"gamma": c.gamma}),
                              ("mixin", {"alpha": c.mixin})):
        try:
            check_coefficients(**coefficient)
        except ValueError as e:
            raise DataError(f"{flag(name)}: {e}") from None
    if not (math.isfinite(c.entropy_coef) and c.entropy_coef >= 0):
        raise DataError(f"--entropy_coef must be >= 0, got {c.entropy_coef}")
    for k in ("block_size", "n_layer", "n_head", "n_embd", "max_iters", "batch_size", "grad_accum",
              "eval_interval", "eval_iters", "task_train", "sample_every"):
        if getattr(c, k) < 1:
            raise DataError(f"--{k} must be >= 1, got {getattr(c, k)}")
    for k in ("warmup_iters", "eval_problems"):
        if getattr(c, k) < 0:
            raise DataError(f"--{k} must be >= 0, got {getattr(c, k)}")
    if c.n_embd % c.n_head:
        raise DataError(f"--n_embd ({c.n_embd}) must be divisible by --n_head ({c.n_head})")
    if not 0 <= c.dropout < 1:
        raise DataError(f"--dropout must be in [0, 1), got {c.dropout}")
    if not 0 < c.min_lr <= c.learning_rate:
        raise DataError("need 0 < --min_lr <= --learning_rate")


def data_spec(c: TrainConfig) -> dict:
    """What load_dataset needs to rebuild this run's data (stored in the checkpoint for sample.py).
    The built-in task's flags map to TaskConfig's fields here: --task_steps is max_steps."""
    task = TaskConfig(max_steps=c.task_steps, max_value=c.task_max_value, n_train=c.task_train)
    return {"data": c.data, "val_data": c.val_data, "full_vocab": c.full_vocab,
            "task": dataclasses.asdict(task)}


# Fields that fix the model or its vocabulary: a resumed run must keep them.
MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd")
SHAPE_FIELDS = MODEL_FIELDS + ("value_head", "data", "val_data", "full_vocab", "task_steps", "task_max_value",
                               "task_train")
# Fields that say where and how this invocation runs, not what the run is: never the checkpoint's.
INVOCATION_FIELDS = ("out_dir", "resume", "device")
# What --resume needs beyond any checkpoint's weights and configuration.
RESUME_KEYS = ("optimizer", "scaler", "data_position", "rng", "best_val_loss", "policy_batches")


def merge_resumed(checkpoint: dict, config: TrainConfig, given: set[str]) -> TrainConfig:
    """A resumed run keeps its checkpoint's configuration, except flags given now. Those that
    would change the model or its data must agree with the checkpoint. (Fields the checkpoint
    predates take their defaults.)"""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"the checkpoint cannot be resumed (it has no {', '.join(missing)})")
    saved = {k: v for k, v in checkpoint["config"].items() if k in FIELDS and k not in INVOCATION_FIELDS}
    for k in SHAPE_FIELDS:
        if k in given and getattr(config, k) != saved.get(k):
            raise DataError(f"{flag(k)} {getattr(config, k)} does not fit the checkpoint ({saved.get(k)})")
    return dataclasses.replace(config, **{k: v for k, v in saved.items() if k not in given})


def init_source(init_from: str, block_size: int) -> dict:
    """What --init_from names, as a checkpoint to start from: one of ours (a ckpt.pt path), or
    GPT-2's published weights (a name or a local Hugging Face folder, GPT.from_pretrained, the
    position table cropped to block_size) with the full, unpadded vocabulary they were trained
    with. Either way the run takes the source's architecture and vocabulary."""
    if init_from not in GPT2_SIZES and not os.path.isdir(init_from):
        if not os.path.isfile(init_from):
            raise CheckpointError(f"--init_from {init_from} is neither a checkpoint file, a GPT-2 "
                                  f"({', '.join(GPT2_SIZES)}) nor a folder")
        return load_checkpoint(init_from)
    gpt2 = GPT.from_pretrained(init_from, block_size)
    vocab = Vocab(None, padded=False)
    if gpt2.config.vocab_size != vocab.size:
        raise CheckpointError(f"{init_from} has {gpt2.config.vocab_size} token embeddings; the GPT-2 "
                              f"tokenizer has {vocab.size} tokens")
    return {"model": gpt2.state_dict(), "model_args": dataclasses.asdict(gpt2.config),
            "vocab": vocab.state_dict()}


def adopt_architecture(c: TrainConfig, given: set[str], source: dict) -> TrainConfig:
    """--init_from: the architecture is the source's (a flag that disagrees is an error). A value
    head can be added to a source without one (it starts at zero); a source's head stays."""
    args = source["model_args"]
    for k in MODEL_FIELDS:
        if k in given and getattr(c, k) != args[k]:
            raise DataError(f"{flag(k)} {getattr(c, k)} does not fit {c.init_from} ({args[k]})")
    return dataclasses.replace(c, **{k: args[k] for k in MODEL_FIELDS},
                               value_head=c.value_head or args.get("value_head", False))


# ----------------------------------------------------------------------------------------------
# Devices, precision, processes

def setup_distributed(device_flag: str) -> tuple[int, int, str]:
    """(rank, world size, device). Under torchrun: one process per GPU (NCCL), or gloo on CPU."""
    try:
        device = pick_device(device_flag)
    except ValueError as e:
        raise DataError(str(e)) from None
    if "RANK" not in os.environ:
        return 0, 1, device
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def print_step_memory(model: GPT, c: TrainConfig, device: str, dtype: torch.dtype) -> None:
    """What a training step needs on paper (model.step_memory) at the longest micro-batch
    (batch_size rows of block_size tokens; online runs add as many policy rows), against the
    GPU's memory: a model that cannot fit says so before the first step, not with an OOM."""
    rows = c.batch_size * (2 if c.mixin > 0 else 1)
    need = step_memory(model.config, rows, c.block_size, half=dtype != torch.float32)
    total = torch.cuda.get_device_properties(device).total_memory

    def gib(n: int) -> str:
        return f"{n / 2**30:.1f} GiB"

    print(f"memory: a step needs about {gib(need['peak'])} on paper (weights and AdamW "
          f"{gib(need['weights_adamw'])}, activations {gib(need['activations'])}, logits "
          f"{gib(need['logits'])}) of the {gib(total)} on {device}")
    if need["peak"] > total:
        print("note: that is more than this GPU has; lower --batch_size (raise --grad_accum to keep "
              "the batch) or --block_size", file=sys.stderr)


def agreed(values: list[float], device: str, world: int) -> list[float]:
    """Each value's maximum over all processes, by one all-reduce: every process then takes the same
    branch (one that stopped alone would leave the others waiting in their next collective)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def autocast(device: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Loss, schedule, evaluation

def policy_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean entropy of pi(.|s_t) = softmax(Q(s_t, .)) over action positions: the paper's
    'MLE with entropy cost' diversity baseline subtracts a multiple of it from the loss."""
    logp = F.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return entropy[targets != IGNORE].mean()


def to_tensors(batch, device: str):
    return [torch.from_numpy(a).to(device, non_blocking=True) for a in batch]


def training_loss(model, expert: list[Item], policy: list[Item] | None, c: TrainConfig, device: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, dict, int]:
    """The loss of one micro-batch, its statistics and its token count: offline IQLearn on the
    expert rows, or, with policy rows, the online objective (iqlearn_online_loss). Expert and
    policy rows share one forward pass."""
    x, y, done = to_tensors(collate(expert + (policy or [])), device)
    with autocast(device, dtype):
        logits = model(x)
    B = len(expert)
    if policy:
        loss, stats = iqlearn_online_loss(logits[:B], y[:B], logits[B:], y[B:], alpha=c.mixin, lam=c.lam,
                                          gamma=c.gamma, expert_done=done[:B], policy_done=done[B:],
                                          ignore_index=IGNORE)
    else:
        loss, stats = iqlearn_loss(logits, y, lam=c.lam, gamma=c.gamma, done=done, ignore_index=IGNORE)
    if c.entropy_coef > 0:
        loss = loss - c.entropy_coef * policy_entropy(logits[:B], y[:B])
    return loss, stats, x.numel()


@torch.no_grad()
def sample_policy(model: GPT, expert: list[Item], dataset: Dataset, device: str,
                  dtype: torch.dtype) -> list[Item]:
    """The policy's own continuations (temperature 1, KV cache, no gradient) of the expert rows'
    prompts: the prompt of a pair, the first half of a text window. They may run as long as the
    longest expert continuation in the batch; one that stops there is cut, not terminal."""
    prompts = [item.tokens[:item.n_prompt if dataset.kind == "pairs" else len(item.tokens) // 2].tolist()
               for item in expert]
    budget = max(len(item.tokens) - len(p) for item, p in zip(expert, prompts))
    model.eval()
    with autocast(device, dtype):
        continuations = model.generate(prompts, budget, temperature=1.0, eos_id=dataset.vocab.eos)
    model.train()
    return [Item(np.array(p + cont), len(p), cont[-1:] == [dataset.vocab.eos])
            for p, cont in zip(prompts, continuations)]


def lr_at(iter_num: int, c: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr over lr_decay_iters; a function of the
    iteration only, so a resumed run follows the same schedule as an uninterrupted one."""
    decay_iters = c.lr_decay_iters or c.max_iters
    if iter_num < c.warmup_iters:
        return c.learning_rate * (iter_num + 1) / c.warmup_iters
    if iter_num >= decay_iters:
        return c.min_lr
    progress = (iter_num - c.warmup_iters) / max(decay_iters - c.warmup_iters, 1)
    return c.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (c.learning_rate - c.min_lr)


@torch.no_grad()
def evaluate(model: GPT, dataset: Dataset, c: TrainConfig, device: str, dtype: torch.dtype) -> dict:
    """Val loss terms over the first eval_iters batches (the same ones every time), the policy's
    entropy, and greedy accuracy on a fixed set of val problems where answers are checkable."""
    model.eval()
    B = c.batch_size
    sums = {"loss": 0.0, "nll": 0.0, "td": 0.0, "entropy": 0.0}
    for i in range(c.eval_iters):
        items = [dataset.val[(i * B + j) % len(dataset.val)] for j in range(B)]
        x, y, done = to_tensors(collate(items), device)
        with autocast(device, dtype):
            logits = model(x)
        loss, stats = iqlearn_loss(logits, y, lam=c.lam, gamma=c.gamma, done=done, ignore_index=IGNORE)
        stats.update(loss=loss, entropy=policy_entropy(logits, y))
        for k in sums:
            sums[k] += float(stats[k]) / c.eval_iters
    result = {f"val_{k}": v for k, v in sums.items()}
    if dataset.checkable and c.eval_problems > 0:
        result["accuracy"] = greedy_accuracy(model, dataset.vocab, dataset.records["val"][:c.eval_problems],
                                             device, dtype)
    model.train()
    return result


def greedy_accuracy(model: GPT, vocab: Vocab, records: list[dict], device: str, dtype: torch.dtype) -> float:
    """The share of records whose greedy continuation (GPT.generate, in its own batches) is correct."""
    with autocast(device, dtype):
        outputs = model.generate([vocab.encode(r["prompt"]) for r in records],
                                 max_new_tokens=model.config.block_size, temperature=0, eos_id=vocab.eos)
    return sum(is_correct(vocab.decode(out), r["response"]) for out, r in zip(outputs, records)) / len(records)


# ----------------------------------------------------------------------------------------------
# The run's state and its checkpoints

@dataclass
class Run:
    """What a run holds fixed once it is set up (the data stream and the weights move, the objects
    stay): setup() builds it from the configuration."""
    config: TrainConfig
    dataset: Dataset
    raw_model: GPT                   # the plain module: checkpoints, evaluation, sampling
    model: torch.nn.Module           # what training calls: raw_model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: Batches
    device: str
    dtype: torch.dtype
    rank: int
    world: int


@dataclass
class State:
    """What changes from iteration to iteration besides weights, optimizer and data position; the
    checkpoint keeps it."""
    iter_num: int = 0
    best_val_loss: float = math.inf
    policy: list[list[Item]] | None = None  # online: the policy batch, reused for sample_every iterations


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt.pt")


def best_path(out_dir: str) -> str:
    return os.path.join(out_dir, "best.pt")


def checkpoint_state(run: Run, state: State) -> dict:
    return {
        "model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "model_args": dataclasses.asdict(run.raw_model.config),
        "config": dataclasses.asdict(run.config), "vocab": run.dataset.vocab.state_dict(),
        "data_spec": data_spec(run.config), "iter_num": state.iter_num, "best_val_loss": state.best_val_loss,
        "data_position": run.batches.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        # online runs reuse a policy batch for sample_every iterations: keep it for an exact resume
        "policy_batches": state.policy and [[(item.tokens.tolist(), item.n_prompt, item.terminal) for item in micro]
                                            for micro in state.policy],
    }


def restore(checkpoint: dict, optimizer, scaler, batches: Batches) -> State:
    """Load a resumed checkpoint's optimizer, scaler, data position and RNG states; return its State."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    batches.load_state_dict(checkpoint["data_position"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    policy = checkpoint["policy_batches"] and [[Item(np.array(t), n, done) for t, n, done in micro]
                                               for micro in checkpoint["policy_batches"]]
    return State(checkpoint["iter_num"], checkpoint["best_val_loss"], policy)


def save(run: Run, state: State, also_best: bool = False) -> bool:
    """Rank 0 writes ckpt.pt (and best.pt) with model.save_checkpoint; every process returns whether
    that worked. A failed write says why in one line; the previous files stay as they were."""
    failed = False
    if run.rank == 0:
        checkpoint = checkpoint_state(run, state)
        for path in [checkpoint_path(run.config.out_dir)] + [best_path(run.config.out_dir)] * also_best:
            try:
                save_checkpoint(checkpoint, path)
            except OSError as e:
                print(f"error: could not write {path} at iter {state.iter_num} ({e.strerror or e}); the "
                      "previous one is kept; stopping: make room or fix permissions, then --resume", file=sys.stderr)
                failed = True
                break
    return not agreed([float(failed)], run.device, run.world)[0]


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
            raise DataError(f"cannot lock --out_dir {out_dir} ({e.strerror or e})") from None

    def _lock(self, out_dir: str) -> None:
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: a holder's pid stays
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(self.fd, 32).decode().strip() or "unknown"
                os.close(self.fd)
                raise DataError(f"{out_dir} is in use by another run (pid {holder}); wait for it to end "
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
    raises DataError (rank 0's names that run's pid) before anything in out_dir is touched."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = OutDirLock(out_dir)
        except DataError as e:
            error = e
    if agreed([float(error is not None)], device, world)[0]:
        raise error or DataError(f"{out_dir} is in use by another run (rank 0 names it)")
    try:
        yield
    finally:
        if lock:
            lock.release()


# ----------------------------------------------------------------------------------------------
# The run: setup, one training step, the loop

def starting_point(c: TrainConfig, given: set[str]) -> tuple[TrainConfig, dict | None, dict | None]:
    """The configuration this run trains with, the checkpoint it resumes (or None), and the one
    whose weights and vocabulary it starts from: the resumed one, --init_from's, or None."""
    ckpt_path = checkpoint_path(c.out_dir)
    if c.resume and c.init_from:
        raise DataError("--resume and --init_from exclude each other")
    if c.resume:  # (a resumed fine-tuning run's config names its --init_from: where it began)
        resumed = load_checkpoint(ckpt_path)
        c = merge_resumed(resumed, c, given)
        check_config(c)
        return c, resumed, resumed
    if os.path.exists(ckpt_path):
        raise DataError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                        "--out_dir (a new run would overwrite it)")
    if c.init_from:
        source = init_source(c.init_from, c.block_size)
        return adopt_architecture(c, given, source), None, source
    return c, None, None


def setup(c: TrainConfig, resumed: dict | None, source: dict | None, rank: int, world: int,
          device: str) -> tuple[Run, State]:
    """Configuration -> model, optimizer, data and the state to start from."""
    dtype = pick_dtype(c.dtype, device)
    torch.manual_seed(c.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    vocab = Vocab.from_state(source["vocab"]) if source else None
    dataset = load_dataset(data_spec(c), c.block_size, vocab)
    flags = dict(vocab_size=dataset.vocab.size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                 n_embd=c.n_embd, dropout=c.dropout, value_head=c.value_head)
    # What no flag sets (GPT-2's biases and GELU) is the source's.
    raw_model = GPT(GPTConfig(**{**(source["model_args"] if source else {}), **flags}))
    if source:
        load_weights(raw_model, source["model"])
    raw_model.to(device)
    optimizer = raw_model.configure_optimizer(c.weight_decay, c.learning_rate)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == torch.float16)
    batches = Batches(dataset.train, c.batch_size, c.seed, rank, world)
    state = restore(resumed, optimizer, scaler, batches) if resumed else State()
    model = torch.compile(raw_model) if c.compile else raw_model
    if world > 1:
        model = DDP(model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    return Run(c, dataset, raw_model, model, optimizer, scaler, batches, device, dtype, rank, world), state


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (how SLURM, Kubernetes, `timeout` and cloud preemption stop a job)
    only note the first signal's number; train_step shares it with every process and the loop saves
    at that iteration boundary and exits with 128 + the number (130, 143). The handler does nothing
    else, so a second signal while the checkpoint is written cannot interrupt the write (SIGKILL
    still can; the temporary file and rename keep the previous checkpoint whole). On leaving the
    `with` block the previous handlers come back."""

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


@dataclass
class Step:
    """What one iteration reports: the progress bar's numbers, its timing, and whether it updated."""
    loss: float
    nll: float
    td: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    seconds: float
    sample_seconds: float
    # What all processes agreed on (one all-reduce per iteration):
    non_finite: bool  # the loss was not finite on some process, and no process took the step
    signum: int       # a stop signal some process received (0: none); the step was taken


def accumulate_gradients(run: Run, experts: list[list[Item]], policy: list[list[Item]] | None
                         ) -> tuple[torch.Tensor, int]:
    """Backward over the micro-batches; their mean [loss, nll, td] and the tokens seen."""
    c, means, n_tokens = run.config, 0.0, 0
    for micro, expert in enumerate(experts):
        sync = run.world == 1 or micro == c.grad_accum - 1  # DDP all-reduces on the last micro-step
        with contextlib.nullcontext() if sync else run.model.no_sync():
            loss, stats, n = training_loss(run.model, expert, policy and policy[micro], c, run.device, run.dtype)
            run.scaler.scale(loss / c.grad_accum).backward()
        means += torch.stack([loss.detach(), stats["nll"], stats["td"]]) / c.grad_accum
        n_tokens += n
    return means, n_tokens


def train_step(run: Run, state: State, stop: StopSignals) -> Step:
    """One iteration: set the learning rate, sample a policy batch (online, every sample_every
    iterations), accumulate gradients over grad_accum micro-batches, clip, and take the optimizer
    step, unless the loss is not finite on some process: then no process takes it. The stop signal
    this process has received by then (stop.signum, 0: none) rides on the same all-reduce as the
    non-finite check, so every process learns of a stop at the same iteration."""
    c, t_start = run.config, time.time()
    lr = lr_at(state.iter_num, c)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    experts = [run.batches.next() for _ in range(c.grad_accum)]
    sample_seconds = 0.0
    if c.mixin > 0 and (state.policy is None or state.iter_num % c.sample_every == 0):
        state.policy = [sample_policy(run.raw_model, expert, run.dataset, run.device, run.dtype)
                        for expert in experts]
        sample_seconds = time.time() - t_start
    means, n_tokens = accumulate_gradients(run, experts, state.policy)
    if c.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), c.grad_clip)
    else:
        grad_norm = torch.zeros(())
    non_finite, signum = agreed([float(not torch.isfinite(means[0])), float(stop.signum)], run.device, run.world)
    if not non_finite:
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        state.iter_num += 1
    seconds = time.time() - t_start
    loss, nll, td = means.tolist()
    return Step(loss, nll, td, lr, float(grad_norm), n_tokens * run.world / max(seconds, 1e-9), seconds,
                sample_seconds, bool(non_finite), int(signum))


@dataclass
class Timing:
    """Seconds spent updating and sampling since the last evaluation."""
    update: float = 0.0
    sample: float = 0.0
    iters: int = 0

    def add(self, step: Step) -> None:
        self.update += step.seconds - step.sample_seconds
        self.sample += step.sample_seconds
        self.iters += 1

    def per_iter_ms(self) -> dict[str, float]:
        return {"update_ms": 1000 * self.update / max(self.iters, 1),
                "sample_ms": 1000 * self.sample / max(self.iters, 1)}


def log_evaluation(run: Run, state: State, timing: Timing) -> dict:
    """Evaluate, append the numbers to out_dir/log.jsonl and print them; return them."""
    c = run.config
    result = evaluate(run.raw_model, run.dataset, c, run.device, run.dtype)
    per_iter = timing.per_iter_ms()
    with open(os.path.join(c.out_dir, "log.jsonl"), "a") as f:
        f.write(json.dumps({"iter": state.iter_num, **result, "lr": lr_at(state.iter_num - 1, c), **per_iter}) + "\n")
    tqdm.write(f"iter {state.iter_num}: val nll {result['val_nll']:.4f}, td {result['val_td']:.4f}, "
               f"entropy {result['val_entropy']:.3f}"
               + (f", greedy accuracy {result['accuracy']:.3f}" if "accuracy" in result else "")
               + f", {per_iter['update_ms']:.0f} ms/iter update"
               + (f" + {per_iter['sample_ms']:.0f} sampling" if c.mixin > 0 else ""))
    return result


def stop_line(bar: tqdm, message: str) -> None:
    """The run's last line, on stderr, under the closed progress bar."""
    bar.close()
    print(message, file=sys.stderr)


def train_loop(run: Run, state: State, stop: StopSignals) -> int:
    """Train to max_iters, evaluating and saving every eval_interval iterations and at the end.
    Returns the exit code: 0 done; 128 + signal number when stopped by SIGINT or SIGTERM (saved at
    the iteration it stopped, without evaluating); 1 on a non-finite loss (the update is not taken
    and not saved) or a failed save (the previous checkpoint is kept)."""
    c, master, ckpt_path = run.config, run.rank == 0, checkpoint_path(run.config.out_dir)
    timing = Timing()
    with tqdm(total=c.max_iters, initial=state.iter_num, disable=not master, dynamic_ncols=True) as bar:
        while state.iter_num < c.max_iters:
            step = train_step(run, state, stop)
            if step.non_finite:
                if master:
                    stop_line(bar, f"error: the loss is not finite at iter {state.iter_num}; stopping (the last "
                                   f"checkpoint in {c.out_dir} is from before this); try a lower --learning_rate")
                return 1
            timing.add(step)
            bar.update(1)
            bar.set_postfix(loss=f"{step.loss:.3f}", nll=f"{step.nll:.3f}", td=f"{step.td:.3f}", lr=f"{step.lr:.1e}",
                            gnorm=f"{step.grad_norm:.2f}", tok_s=f"{step.tokens_per_s:.0f}", refresh=False)
            if step.signum:  # save first: a preempted job has seconds, the evaluation can wait
                if not save(run, state):
                    return 1
                if master:
                    stop_line(bar, f"stopped by {signal.Signals(step.signum).name} at iter {state.iter_num}; "
                                   f"saved {ckpt_path}; --resume continues")
                return 128 + step.signum
            if state.iter_num % c.eval_interval == 0 or state.iter_num == c.max_iters:
                improved = False
                if master:
                    result = log_evaluation(run, state, timing)
                    improved = result["val_loss"] < state.best_val_loss
                    state.best_val_loss = min(state.best_val_loss, result["val_loss"])
                timing = Timing()
                if not save(run, state, also_best=improved and c.keep_best):
                    return 1
    return 0


def announce(run: Run, state: State, resumed: bool) -> None:
    """Rank 0's first line: model, data, device (on CUDA, a step's memory); a fresh run also starts a
    fresh log."""
    c, dataset = run.config, run.dataset
    if not resumed:
        open(os.path.join(c.out_dir, "log.jsonl"), "w").close()
    print(f"{'resuming at iter ' + str(state.iter_num) if resumed else 'training'}: "
          f"{run.raw_model.num_params() / 1e6:.2f}M params, vocab {dataset.vocab.size}, "
          f"{len(dataset.train)} train / {len(dataset.val)} val examples ({dataset.n_dropped} "
          f"too long, dropped), device {run.device}, {str(run.dtype)[6:]}, lambda {c.lam}, {run.world} process(es)")
    if c.mixin > 0 and c.gamma == 1:
        # Over a finished episode, sum_t (V(s_t) - V(s_t+1)) = V(s0) for expert and policy
        # alike (same prompt), so at gamma = 1 the online value term all but cancels.
        print("note: with --gamma 1 the online value term nearly cancels (both sides sum to "
              "V(s0)); use --gamma < 1, e.g. 0.9, for its signal", file=sys.stderr)
    if run.device.startswith("cuda"):
        print_step_memory(run.raw_model, c, run.device, run.dtype)


def train(argv: list[str] | None = None) -> int:
    """The whole run: configuration, processes, the out_dir lock, starting point, setup, the loop.
    Stop signals are noted from the start, so one that arrives during setup stops the run after its
    first iteration, saved. Returns the exit code."""
    c, given = parse_config(argv)
    check_config(c)
    with StopSignals() as stop:
        rank, world, device = setup_distributed(c.device)
        with holding_out_dir(c.out_dir, rank, world, device):  # before anything in out_dir is read or written
            c, resumed, source = starting_point(c, given)
            run, state = setup(c, resumed, source, rank, world, device)
            if rank == 0:
                announce(run, state, resumed is not None)
            return train_loop(run, state, stop)


def main(argv: list[str] | None = None) -> int:
    try:
        code = train(argv)
    except (DataError, CheckpointError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        code = 2
    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
