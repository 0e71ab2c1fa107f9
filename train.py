"""Train a GPT with offline IQLearn (nll + lambda * td); --lambda 0 is plain MLE.

    python train.py --lambda 0.5                     # built-in GSM8K-style task, CPU or GPU
    python train.py --data my.jsonl --lambda 0.1     # {"prompt","response"} or {"question","answer"}
    python train.py --data input.txt                 # running text
    python train.py --init_from gpt2 --data gsm8k/train.jsonl --block_size 512   # fine-tune GPT-2
    torchrun --standalone --nproc_per_node=4 train.py --lambda 0.5   # DDP

Every flag and its default: python train.py --help. A run writes out_dir/ckpt.pt (at each eval and
at the end, atomically) and appends its eval numbers to out_dir/log.jsonl; --resume continues it.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data import (IGNORE, Batches, DataError, Dataset, Item, TaskConfig, Vocab, collate, is_correct,
                  load_dataset)
from iqlearn import iqlearn_loss, iqlearn_online_loss
from model import (GPT, GPT2_SIZES, CheckpointError, GPTConfig, load_checkpoint, load_weights, pick_device,
                   pick_dtype, save_checkpoint, step_memory)


# ----------------------------------------------------------------------------------------------
# Configuration: every flag, with its default

class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--lambda", dest="lam", type=float, default=0.5, help="weight of the TD regulariser; 0 = MLE")
    a("--gamma", type=float, default=1.0, help="discount in r_t = Q(s_t,a_t) - gamma V(s_t+1)")
    a("--entropy_coef", type=float, default=0.0, help="subtract this times the mean policy entropy")
    a("--mixin", type=float, default=0.0, help="online IQLearn: weight alpha of self-generated data; 0 = offline")
    a("--sample_every", type=int, default=1, help="online: draw new policy samples every this many iterations")
    # data
    a("--data", default=None, help=".jsonl pairs or .txt text; default: the built-in task")
    a("--val_data", default=None, help="validation file; default: a held-out slice of --data")
    a("--full_vocab", action="store_true", help="all GPT-2 ids instead of the data's own")
    a("--task_steps", type=int, default=3, help="built-in task: at most this many steps (2-4)")
    a("--task_max_value", type=int, default=50, help="built-in task: size of starting amounts")
    a("--task_train", type=int, default=20000, help="built-in task: training problems")
    # model
    a("--block_size", type=int, default=128, help="longest sequence in tokens")
    a("--n_layer", type=int, default=4, help="transformer blocks")
    a("--n_head", type=int, default=8, help="attention heads")
    a("--n_embd", type=int, default=256, help="width of the residual stream")
    a("--dropout", type=float, default=0.0, help="dropout probability while training")
    a("--value_head", action="store_true",
      help="add a scalar value head: Q = logits + v(h), so the TD term need not bend the policy")
    # optimisation
    a("--max_iters", type=int, default=1200, help="total iterations (a resumed run continues to it)")
    a("--lr_decay_iters", type=int, default=None, help="length of the cosine schedule; default max_iters")
    a("--batch_size", type=int, default=32, help="examples per micro-step per process")
    a("--grad_accum", type=int, default=1, help="micro-steps per iteration")
    a("--learning_rate", type=float, default=2e-3, help="peak learning rate (AdamW)")
    a("--min_lr", type=float, default=2e-4, help="learning rate at the end of the cosine decay")
    a("--warmup_iters", type=int, default=100, help="linear learning-rate warm-up")
    a("--weight_decay", type=float, default=0.1, help="AdamW weight decay of matrices")
    a("--grad_clip", type=float, default=1.0, help="clip the gradient norm to this; 0 = off")
    # evaluation and output
    a("--eval_interval", type=int, default=200, help="evaluate and checkpoint every this many iterations")
    a("--eval_iters", type=int, default=10, help="val batches per evaluation")
    a("--eval_problems", type=int, default=200, help="val problems for greedy accuracy")
    a("--out_dir", default="out", help="where ckpt.pt and log.jsonl go")
    a("--resume", action="store_true", help="continue from out_dir/ckpt.pt")
    a("--init_from", default=None,
      help="start from these weights: a ckpt.pt (e.g. an MLE model), or GPT-2: "
           f"{', '.join(GPT2_SIZES)} or a local Hugging Face GPT-2 folder")
    # system
    a("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    a("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
      help="autocast precision; auto: bf16 (else fp16) on CUDA, float32 elsewhere")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--seed", type=int, default=1337, help="initialisation and data order")
    return p


# Flags that fix the model or its vocabulary: a resumed run must keep them.
MODEL_FLAGS = ("block_size", "n_layer", "n_head", "n_embd")
SHAPE_FLAGS = MODEL_FLAGS + ("value_head", "data", "val_data", "full_vocab", "task_steps", "task_max_value", "task_train")


def parse_config(argv: list[str] | None) -> tuple[dict, set[str]]:
    """All flags as a dict, and the names of those given on the command line."""
    parser = build_parser()
    config = vars(parser.parse_args(argv))
    given_parser = build_parser()
    for action in given_parser._actions:  # no defaults: the namespace holds only what was given
        action.default = argparse.SUPPRESS
    return config, set(vars(given_parser.parse_args(argv)))


def check_config(c: dict) -> None:
    if not (math.isfinite(c["lam"]) and c["lam"] >= 0):
        raise DataError(f"--lambda must be a finite number >= 0, got {c['lam']}")
    if not 0 <= c["gamma"] <= 1:
        raise DataError(f"--gamma must be in [0, 1], got {c['gamma']}")
    if not (math.isfinite(c["entropy_coef"]) and c["entropy_coef"] >= 0):
        raise DataError(f"--entropy_coef must be >= 0, got {c['entropy_coef']}")
    if not 0 <= c["mixin"] <= 1:
        raise DataError(f"--mixin must be in [0, 1], got {c['mixin']}")
    for k in ("block_size", "n_layer", "n_head", "n_embd", "max_iters", "batch_size", "grad_accum",
              "eval_interval", "eval_iters", "task_train", "sample_every"):
        if c[k] < 1:
            raise DataError(f"--{k} must be >= 1, got {c[k]}")
    for k in ("warmup_iters", "eval_problems"):
        if c[k] < 0:
            raise DataError(f"--{k} must be >= 0, got {c[k]}")
    if c["n_embd"] % c["n_head"]:
        raise DataError(f"--n_embd ({c['n_embd']}) must be divisible by --n_head ({c['n_head']})")
    if not 0 <= c["dropout"] < 1:
        raise DataError(f"--dropout must be in [0, 1), got {c['dropout']}")
    if not 0 < c["min_lr"] <= c["learning_rate"]:
        raise DataError("need 0 < --min_lr <= --learning_rate")


def data_spec(c: dict) -> dict:
    """What load_dataset needs to rebuild this run's data (stored in the checkpoint for sample.py)."""
    task = TaskConfig(max_steps=c["task_steps"], max_value=c["task_max_value"], n_train=c["task_train"])
    return {"data": c["data"], "val_data": c["val_data"], "full_vocab": c["full_vocab"],
            "task": dataclasses.asdict(task)}


# What --resume needs beyond any checkpoint's weights and configuration.
RESUME_KEYS = ("optimizer", "scaler", "data_position", "rng", "best_val_loss", "policy_batches")


def merge_resumed(checkpoint: dict, config: dict, given: set[str]) -> dict:
    """A resumed run keeps its checkpoint's configuration, except flags given now. Those that
    would change the model or its data must agree with the checkpoint. (Flags the checkpoint
    predates take their defaults.)"""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"the checkpoint cannot be resumed (it has no {', '.join(missing)})")
    saved = {k: v for k, v in checkpoint["config"].items() if k in config}
    for k in SHAPE_FLAGS:
        if k in given and config[k] != saved.get(k):
            raise DataError(f"--{k} {config[k]} does not fit the checkpoint ({saved.get(k)})")
    return {**config, **saved, **{k: config[k] for k in given}}


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


def autocast(device: str, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def print_step_memory(model: GPT, c: dict, device: str, dtype: torch.dtype) -> None:
    """What a training step needs on paper (model.step_memory) at the longest micro-batch
    (batch_size rows of block_size tokens; online runs add as many policy rows), against the
    GPU's memory: a model that cannot fit says so before the first step, not with an OOM."""
    rows = c["batch_size"] * (2 if c["mixin"] > 0 else 1)
    need = step_memory(model.config, rows, c["block_size"], half=dtype != torch.float32)
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
# Loss, schedule, evaluation

def policy_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean entropy of pi(.|s_t) = softmax(Q(s_t, .)) over action positions: the paper's
    'MLE with entropy cost' diversity baseline subtracts a multiple of it from the loss."""
    logp = F.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return entropy[targets != IGNORE].mean()


def training_loss(model, expert: list[Item], policy: list[Item] | None, c: dict, device: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, dict, int]:
    """The loss of one micro-batch: offline IQLearn on the expert rows, or, with policy rows, the
    online objective (iqlearn_online_loss). Expert and policy rows share one forward pass."""
    x, y, done = to_tensors(collate(expert + (policy or [])), device)
    with autocast(device, dtype):
        logits = model(x)
    B = len(expert)
    if policy:
        loss, stats = iqlearn_online_loss(logits[:B], y[:B], logits[B:], y[B:], c["mixin"], c["lam"],
                                          c["gamma"], done[:B], done[B:], IGNORE)
    else:
        loss, stats = iqlearn_loss(logits, y, c["lam"], c["gamma"], done, IGNORE)
    if c["entropy_coef"] > 0:
        entropy = policy_entropy(logits[:B], y[:B])
        loss = loss - c["entropy_coef"] * entropy
        stats["entropy"] = entropy.detach()
    return loss, stats, x.numel()


@torch.no_grad()
def sample_policy(model: GPT, expert: list[Item], dataset: Dataset, device: str,
                  dtype: torch.dtype) -> list[Item]:
    """The policy's own continuations (temperature 1, KV cache, no gradient) of the expert rows'
    prompts: the prompt of a pair, the first half of a text window. They may run as long as the
    longest expert continuation in the batch; one that stops there is cut, not terminal."""
    prompts = [it.tokens[:it.n_prompt if dataset.kind == "pairs" else len(it.tokens) // 2].tolist()
               for it in expert]
    budget = max(len(it.tokens) - len(p) for it, p in zip(expert, prompts))
    model.eval()
    with autocast(device, dtype):
        continuations = model.generate(prompts, budget, temperature=1.0, eos_id=dataset.vocab.eos)
    model.train()
    return [Item(np.array(p + cont), len(p), cont[-1:] == [dataset.vocab.eos])
            for p, cont in zip(prompts, continuations)]


def lr_at(it: int, c: dict) -> float:
    """Linear warm-up, then cosine decay to min_lr over lr_decay_iters; a function of the
    iteration only, so a resumed run follows the same schedule as an uninterrupted one."""
    decay_iters = c["lr_decay_iters"] or c["max_iters"]
    if it < c["warmup_iters"]:
        return c["learning_rate"] * (it + 1) / c["warmup_iters"]
    if it >= decay_iters:
        return c["min_lr"]
    progress = (it - c["warmup_iters"]) / max(decay_iters - c["warmup_iters"], 1)
    return c["min_lr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (c["learning_rate"] - c["min_lr"])


def to_tensors(batch, device: str):
    return [torch.from_numpy(a).to(device, non_blocking=True) for a in batch]


@torch.no_grad()
def evaluate(model: GPT, dataset: Dataset, c: dict, device: str, dtype: torch.dtype) -> dict:
    """Val loss terms over the first eval_iters batches (the same ones every time), the policy's
    entropy, and greedy accuracy on a fixed set of val problems where answers are checkable."""
    model.eval()
    B = c["batch_size"]
    sums = {"loss": 0.0, "nll": 0.0, "td": 0.0, "entropy": 0.0}
    for i in range(c["eval_iters"]):
        items = [dataset.val[(i * B + j) % len(dataset.val)] for j in range(B)]
        x, y, done = to_tensors(collate(items), device)
        with autocast(device, dtype):
            logits = model(x)
        loss, stats = iqlearn_loss(logits, y, c["lam"], c["gamma"], done, IGNORE)
        stats.update(loss=loss, entropy=policy_entropy(logits, y))
        for k in sums:
            sums[k] += float(stats[k]) / c["eval_iters"]
    result = {f"val_{k}": v for k, v in sums.items()}
    if dataset.checkable and c["eval_problems"] > 0:
        result["accuracy"] = greedy_accuracy(model, dataset.vocab, dataset.records["val"][:c["eval_problems"]],
                                             device, dtype)
    model.train()
    return result


def greedy_accuracy(model: GPT, vocab: Vocab, records: list[dict], device: str, dtype: torch.dtype,
                    chunk: int = 256) -> float:
    correct = 0
    for i in range(0, len(records), chunk):
        part = records[i:i + chunk]
        with autocast(device, dtype):
            outputs = model.generate([vocab.encode(r["prompt"]) for r in part],
                                     max_new_tokens=model.config.block_size, temperature=0,
                                     eos_id=vocab.eos)
        correct += sum(is_correct(vocab.decode(out), r["response"]) for out, r in zip(outputs, part))
    return correct / len(records)


# ----------------------------------------------------------------------------------------------
# Checkpoints

def checkpoint_state(model: GPT, optimizer, scaler, c: dict, dataset: Dataset, it: int,
                     best_val_loss: float, batches: Batches, policy: list[list[Item]] | None) -> dict:
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "model_args": dataclasses.asdict(model.config), "config": c,
        "vocab": dataset.vocab.state_dict(), "data_spec": data_spec(c),
        "iter_num": it, "best_val_loss": best_val_loss, "data_position": batches.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        # online runs reuse a policy batch for sample_every iterations: keep it for an exact resume
        "policy_batches": policy and [[(it.tokens.tolist(), it.n_prompt, it.terminal) for it in micro]
                                      for micro in policy],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# The run

class StopRequest:
    """Ctrl-C sets a flag; the loop checks it between iterations, saves and exits."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.requested = True


def train(argv: list[str] | None = None) -> int:
    config, given = parse_config(argv)
    check_config(config)
    if config["resume"] and config["init_from"]:
        raise DataError("--resume and --init_from exclude each other")
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")
    rank, world, device = setup_distributed(config["device"])
    master = rank == 0

    # What we start from: a checkpoint of this run, another run's weights, GPT-2's, or nothing.
    resumed = source = None
    if config["resume"]:
        resumed = load_checkpoint(ckpt_path)
        config = merge_resumed(resumed, config, given)
        check_config(config)
        source = resumed
    elif os.path.exists(ckpt_path):
        raise DataError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                        "--out_dir (a new run would overwrite it)")
    if config["init_from"] and not resumed:
        source = init_source(config["init_from"], config["block_size"])
        for k in MODEL_FLAGS:  # the architecture is the source's
            if k in given and config[k] != source["model_args"][k]:
                raise DataError(f"--{k} {config[k]} does not fit {config['init_from']} "
                                f"({source['model_args'][k]})")
            config[k] = source["model_args"][k]
        # A head can be added to a source without one (it starts at zero); a source's head stays.
        config["value_head"] = config["value_head"] or source["model_args"].get("value_head", False)
    c = config
    dtype = pick_dtype(c["dtype"], device)
    torch.manual_seed(c["seed"])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    vocab = Vocab.from_state(source["vocab"]) if source else None
    dataset = load_dataset(data_spec(c), c["block_size"], vocab)
    flags = dict(vocab_size=dataset.vocab.size, block_size=c["block_size"], n_layer=c["n_layer"],
                 n_head=c["n_head"], n_embd=c["n_embd"], dropout=c["dropout"], value_head=c["value_head"])
    # What no flag sets (GPT-2's biases and GELU) is the source's.
    model = GPT(GPTConfig(**{**(source["model_args"] if source else {}), **flags}))
    if source:
        load_weights(model, source["model"])
    model.to(device)
    optimizer = model.configure_optimizer(c["weight_decay"], c["learning_rate"])
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == torch.float16)
    batches = Batches(dataset.train, c["batch_size"], c["seed"], rank, world)
    it, best_val_loss, policy = 0, float("inf"), None
    if resumed:
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        batches.load_state_dict(resumed["data_position"])
        restore_rng(resumed["rng"])
        it, best_val_loss = resumed["iter_num"], resumed["best_val_loss"]
        policy = resumed["policy_batches"] and [[Item(np.array(t), n, done) for t, n, done in micro]
                                                for micro in resumed["policy_batches"]]

    raw_model = model  # checkpoints and evaluation use the plain module
    if c["compile"]:
        model = torch.compile(model)
    if world > 1:
        model = DDP(model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)

    if master:
        os.makedirs(c["out_dir"], exist_ok=True)
        if not resumed:  # a fresh run starts a fresh log
            open(os.path.join(c["out_dir"], "log.jsonl"), "w").close()
        print(f"{'resuming at iter ' + str(it) if resumed else 'training'}: {raw_model.num_params() / 1e6:.2f}M "
              f"params, vocab {dataset.vocab.size}, {len(dataset.train)} train / {len(dataset.val)} val "
              f"examples ({dataset.n_dropped} too long, dropped), device {device}, {str(dtype)[6:]}, "
              f"lambda {c['lam']}, {world} process(es)")
        if c["mixin"] > 0 and c["gamma"] == 1:
            # Over a finished episode, sum_t (V(s_t) - V(s_t+1)) = V(s0) for expert and policy
            # alike (same prompt), so at gamma = 1 the online value term all but cancels.
            print("note: with --gamma 1 the online value term nearly cancels (both sides sum to "
                  "V(s0)); use --gamma < 1, e.g. 0.9, for its signal", file=sys.stderr)
        if device.startswith("cuda"):
            print_step_memory(raw_model, c, device, dtype)

    def save():
        if master:
            save_checkpoint(checkpoint_state(raw_model, optimizer, scaler, c, dataset, it, best_val_loss,
                                             batches, policy), ckpt_path)

    timing = {"update": 0.0, "sample": 0.0, "iters": 0}  # seconds since the last eval

    def log_eval():
        nonlocal best_val_loss
        result = evaluate(raw_model, dataset, c, device, dtype)
        best_val_loss = min(best_val_loss, result["val_loss"])
        per_iter = {f"{k}_ms": 1000 * timing[k] / max(timing["iters"], 1) for k in ("update", "sample")}
        line = {"iter": it, **result, "lr": lr_at(it - 1, c), **per_iter}
        with open(os.path.join(c["out_dir"], "log.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
        tqdm.write(f"iter {it}: val nll {result['val_nll']:.4f}, td {result['val_td']:.4f}, "
                   f"entropy {result['val_entropy']:.3f}"
                   + (f", greedy accuracy {result['accuracy']:.3f}" if "accuracy" in result else "")
                   + f", {per_iter['update_ms']:.0f} ms/iter update"
                   + (f" + {per_iter['sample_ms']:.0f} sampling" if c["mixin"] > 0 else ""))
        timing.update(update=0.0, sample=0.0, iters=0)

    stop = StopRequest()
    bar = tqdm(total=c["max_iters"], initial=it, disable=not master, dynamic_ncols=True)
    while it < c["max_iters"]:
        t_start = time.time()
        if stop.requested:
            save()
            if master:
                bar.close()
                print(f"interrupted at iter {it}; saved {ckpt_path}; --resume continues", file=sys.stderr)
            return 130
        lr = lr_at(it, c)
        for group in optimizer.param_groups:
            group["lr"] = lr
        n_tokens, loss_sum = 0, 0.0
        experts = [batches.next() for _ in range(c["grad_accum"])]
        sample_seconds = 0.0
        if c["mixin"] > 0 and (policy is None or it % c["sample_every"] == 0):
            policy = [sample_policy(raw_model, expert, dataset, device, dtype) for expert in experts]
            sample_seconds = time.time() - t_start
        for micro, expert in enumerate(experts):
            sync = world == 1 or micro == c["grad_accum"] - 1  # DDP all-reduces on the last micro-step
            with contextlib.nullcontext() if sync else model.no_sync():
                loss, stats, n = training_loss(model, expert, policy and policy[micro], c, device, dtype)
                scaler.scale(loss / c["grad_accum"]).backward()
            n_tokens += n
            loss_sum += loss.detach() / c["grad_accum"]
        if c["grad_clip"] > 0:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), c["grad_clip"])
        else:
            grad_norm = torch.zeros(())
        bad = torch.tensor(float(not torch.isfinite(loss_sum)), device=device)
        if world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            if master:
                bar.close()
                print(f"error: the loss is not finite at iter {it}; stopping (the last checkpoint in "
                      f"{c['out_dir']} is from before this); try a lower --learning_rate", file=sys.stderr)
            return 1
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        it += 1

        seconds = time.time() - t_start
        timing["sample"] += sample_seconds
        timing["update"] += seconds - sample_seconds
        timing["iters"] += 1
        tokens_per_s = n_tokens * world / max(seconds, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum.item():.3f}", nll=f"{stats['nll'].item():.3f}",
                        td=f"{stats['td'].item():.3f}", lr=f"{lr:.1e}", gnorm=f"{float(grad_norm):.2f}",
                        tok_s=f"{tokens_per_s:.0f}", refresh=False)
        if master and (it % c["eval_interval"] == 0 or it == c["max_iters"]):
            log_eval()
            save()
    bar.close()
    if master and not os.path.exists(ckpt_path):
        save()  # resumed at max_iters: nothing to do, but leave a checkpoint behind
    return 0


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
