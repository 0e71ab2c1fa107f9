"""Train a GPT with offline IQLearn (loss = nll + lambda * td); --lambda 0 is plain MLE.

    python train.py --lambda 0.5                     # built-in GSM8K-style task, CPU or GPU
    python train.py --data my.jsonl --lambda 0.1     # {"prompt","response"} or {"question","answer"}
    python train.py --data input.txt                 # running text
    python train.py --init_from gpt2 --data gsm8k/train.jsonl --block_size 512   # fine-tune GPT-2
    torchrun --standalone --nproc_per_node=4 train.py --lambda 0.5   # DDP

Top to bottom: the configuration (each field is a flag; --help lists them), the loss of a batch,
the learning-rate schedule, evaluation, the run's setup, one training step, and the loop, which
evaluates into out_dir/log.jsonl and saves out_dir/ckpt.pt (--resume continues). What it calls
without explaining is runtime.py (flags, devices, stop signals) and runfiles.py (checkpoint
files, the out_dir lock, the log): skip them on a first reading.
"""

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data import (DATA_FIELDS, IGNORE, Batches, Dataset, Item, Problem, Vocab, collate, data_spec, greedy_accuracy,
                  length_chunks, load_dataset, policy_samples, problems_from, val_batches)
from errors import UserError, run_main
from iqlearn import check_coefficients, iqlearn_loss, iqlearn_online_loss, policy_entropy
from model import GPT
from runfiles import (MODEL_FIELDS, append_log, build_model, checkpoint_path, holding_out_dir, restore_training,
                      start_log, starting_point, training_checkpoint, what_is_kept, write_checkpoint)
from runtime import (DTYPES, MAX_SEED, StopSignals, agreed, autocast, check_ranges, cosine_lr, flag_of, grad_scaler,
                     knob, parse_config, pick_dtype, print_step_memory, setup_distributed)


# ----------------------------------------------------------------------------------------------
# Configuration: every flag, with its default

@dataclass
class TrainConfig:
    # the objective
    lam: float = knob(0.5, "weight of the TD regulariser; 0 = MLE", flag="lambda")  # lambda: a Python keyword
    gamma: float = knob(1.0, "discount in r_t = Q(s_t,a_t) - gamma V(s_t+1)")
    entropy_coef: float = knob(0.0, "subtract this times the mean policy entropy")
    mixin: float = knob(0.0, "online IQLearn: the fraction alpha of self-generated data; 0 = offline")
    sample_every: int = knob(1, "online: draw new policy samples every this many iterations", at_least=1)
    # data
    data: str | None = knob(None, ".jsonl pairs or .txt text; default: the built-in task")
    val_data: str | None = knob(None, "validation file; default: a held-out slice of --data")
    full_vocab: bool = knob(False, "all GPT-2 ids instead of the data's own")
    task_steps: int = knob(3, "built-in task: at most this many steps (2-4)")
    task_min_steps: int = knob(2, "built-in task: at least this many steps (2-4)")
    task_max_value: int = knob(50, "built-in task: size of starting amounts")
    task_train: int = knob(20000, "built-in task: training problems", at_least=1)
    # model
    block_size: int = knob(128, "longest sequence in tokens", at_least=1)
    n_layer: int = knob(4, "transformer blocks", at_least=1)
    n_head: int = knob(8, "attention heads", at_least=1)
    n_embd: int = knob(256, "width of the residual stream", at_least=1)
    dropout: float = knob(0.0, "dropout probability while training")
    value_head: bool = knob(False, "add a scalar value head: Q = logits + v(h), so the TD term need not "
                                   "bend the policy")
    # optimisation
    max_iters: int = knob(1200, "total iterations (a resumed run continues to it)", at_least=1)
    lr_decay_iters: int | None = knob(None, "length of the cosine schedule; default max_iters")
    batch_size: int = knob(32, "examples per micro-step per process", at_least=1)
    grad_accum: int = knob(1, "micro-steps per iteration", at_least=1)
    batch_chunks: int = knob(4, "compute each batch as this many passes over rows of similar length, each padded "
                                "to its own longest row (the same loss, less padding); 1 = one pass", at_least=1)
    learning_rate: float = knob(2e-3, "peak learning rate (AdamW)")
    min_lr: float = knob(2e-4, "learning rate at the end of the cosine decay")
    warmup_iters: int = knob(100, "linear learning-rate warm-up", at_least=0)
    weight_decay: float = knob(0.1, "AdamW weight decay of matrices")
    grad_clip: float = knob(1.0, "clip the gradient norm to this; 0 = off")
    # evaluation and output
    eval_interval: int = knob(200, "evaluate and checkpoint every this many iterations", at_least=1)
    eval_iters: int = knob(10, "val batches per evaluation", at_least=1)
    eval_problems: int = knob(200, "val problems for greedy accuracy", at_least=0)
    keep_best: bool = knob(False, "also write out_dir/best.pt at each evaluation whose val loss is the lowest yet")
    out_dir: str = knob("out", "where ckpt.pt and log.jsonl go")
    resume: bool = knob(False, "continue from out_dir/ckpt.pt")
    init_from: str | None = knob(None, "start from these weights: a ckpt.pt (e.g. an MLE model), or GPT-2: "
                                       "gpt2 (-medium, -large, -xl) or a local Hugging Face GPT-2 folder")
    # system
    device: str = knob("auto", "auto (cuda, mps, cpu) or a torch device")
    dtype: str = knob("auto", "autocast precision; auto: bf16 (else fp16) on CUDA, float32 elsewhere",
                      choices=["auto", *DTYPES])
    compile: bool = knob(False, "torch.compile the model")
    seed: int = knob(1337, "initialisation and data order", at_least=0, at_most=MAX_SEED)


# A run keeps its model's shape and its data for life (--resume must agree; --init_from sets the
# shape, MODEL_FIELDS); where and how one invocation runs is never taken from a checkpoint.
FIXED_FIELDS = MODEL_FIELDS + ("value_head",) + DATA_FIELDS
PER_INVOCATION = ("out_dir", "resume", "device")


def check_config(c: TrainConfig, settled: bool) -> None:
    """UserError for the first flag out of range. settled: the model's shape is final; before
    --init_from or --resume has set it, the flags that may still be replaced are not checked
    against each other."""
    # The objective's coefficients have one range check, iqlearn's; here it names our flags.
    for name, coefficient in (("lam", {"lam": c.lam}), ("gamma", {"gamma": c.gamma}), ("mixin", {"alpha": c.mixin})):
        try:
            check_coefficients(**coefficient)
        except ValueError as e:
            raise UserError(f"{flag_of(TrainConfig, name)}: {e}") from None
    check_ranges(c)
    if c.entropy_coef < 0:
        raise UserError(f"--entropy_coef must be >= 0, got {c.entropy_coef}")
    if settled and c.n_embd % c.n_head:
        raise UserError(f"--n_embd ({c.n_embd}) must be divisible by --n_head ({c.n_head})")
    if not 0 <= c.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {c.dropout}")
    if not 0 < c.min_lr <= c.learning_rate:
        raise UserError("need 0 < --min_lr <= --learning_rate")


# ----------------------------------------------------------------------------------------------
# The loss of one batch, and the learning-rate schedule

def training_loss(model, expert: list[Item], policy: list[Item] | None, c: TrainConfig, device: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, dict, int]:
    """The loss of one micro-batch, its statistics and its token count: offline IQLearn on the
    expert rows, or, with policy rows, the online objective (iqlearn_online_loss). Expert and
    policy rows share one forward pass. collate's `done` marks each row's closing EOS, the
    terminal action whose next state has value 0."""
    x, y, done = (torch.from_numpy(a).to(device, non_blocking=True) for a in collate(expert + (policy or [])))
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


def lr_at(iter_num: int, c: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr over lr_decay_iters; a function of the
    iteration only, so a resumed run follows the same schedule as an uninterrupted one."""
    return cosine_lr(iter_num, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters or c.max_iters)


# ----------------------------------------------------------------------------------------------
# Evaluation

@torch.no_grad()
def val_metrics(model: GPT, dataset: Dataset, problems: list[Problem], c: TrainConfig, device: str,
                dtype: torch.dtype) -> dict:
    """The loss's terms on the first eval_iters val batches (the same ones every time), the mean
    implicit reward and soft value there, the policy's entropy, and greedy accuracy on `problems`
    (val problems with checkable answers; data.greedy_accuracy, as sample.py --eval measures it)."""
    model.eval()
    sums = {"loss": 0.0, "nll": 0.0, "td": 0.0, "reward_mean": 0.0, "value_mean": 0.0, "entropy": 0.0}
    for items in val_batches(dataset.val, c.batch_size, c.eval_iters):
        x, y, done = (torch.from_numpy(a).to(device, non_blocking=True) for a in collate(items))
        with autocast(device, dtype):
            logits = model(x)
        loss, stats = iqlearn_loss(logits, y, lam=c.lam, gamma=c.gamma, done=done, ignore_index=IGNORE)
        stats.update(loss=loss, entropy=policy_entropy(logits, y))
        for k in sums:
            sums[k] += float(stats[k]) / c.eval_iters
    result = {f"val_{k}": v for k, v in sums.items()}
    if problems:
        with autocast(device, dtype):
            result["accuracy"] = greedy_accuracy(model, dataset.vocab, problems, c.block_size)
    model.train()
    return result


# ----------------------------------------------------------------------------------------------
# The run: its parts, its state, its setup, its checkpoint

@dataclass
class Run:
    """What a run holds fixed once setup() has built it (the data stream and the weights move)."""
    config: TrainConfig
    dataset: Dataset
    val_problems: list[Problem]      # greedy accuracy's problems (none where answers are not checkable)
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
    """What else changes from iteration to iteration (besides weights, optimizer, data position)."""
    iter_num: int = 0
    best_val_loss: float = math.inf
    policy: list[list[Item]] | None = None  # online: the policy batch, reused for sample_every iterations
    # Since the last evaluation: seconds updating and sampling, and iterations (its log row's ms/iter).
    since_eval: dict = field(default_factory=lambda: {"update": 0.0, "sample": 0.0, "iters": 0})
    eval_owed: bool = False  # stopped by a signal in an iteration that evaluates, before evaluating


def setup(c: TrainConfig, resumed: dict | None, source: dict | None, rank: int, world: int,
          device: str) -> tuple[Run, State]:
    """Configuration -> model, optimizer, data and the state to start from."""
    dtype = pick_dtype(c.dtype, device)
    torch.manual_seed(c.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dataset = load_dataset(data_spec(c), c.block_size, Vocab.from_state(source["vocab"]) if source else None,
                           grow=resumed is None)  # fine-tuning data may bring new tokens
    problems = problems_from(dataset.vocab, dataset.records["val"], c.block_size, c.eval_problems) \
        if dataset.checkable else []
    raw_model = build_model(c, dataset.vocab, source).to(device)
    # The value head adds one v(h) to every logit of a state, which softmax ignores: only the TD and
    # online value terms train it. Without them its gradient is rounding noise that AdamW would turn
    # into lr-sized steps, so it is frozen (AdamW skips a parameter without a gradient).
    if raw_model.value_head is not None and c.lam == 0 and c.mixin == 0:
        raw_model.value_head.requires_grad_(False)
    optimizer = raw_model.configure_optimizer(c.weight_decay, c.learning_rate)
    scaler = grad_scaler(device, dtype)
    batches = Batches(dataset.train, c.batch_size, c.seed, rank, world)
    state = restore(resumed, optimizer, scaler, batches) if resumed else State()
    model = torch.compile(raw_model) if c.compile else raw_model
    if world > 1:
        model = DDP(model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    return Run(c, dataset, problems, raw_model, model, optimizer, scaler, batches, device, dtype, rank, world), state


def checkpoint_state(run: Run, state: State) -> dict:
    """runfiles.training_checkpoint, plus the online policy batch (reused for sample_every iterations)."""
    policy = state.policy and [[(item.tokens.tolist(), item.n_prompt, item.terminal) for item in micro]
                               for micro in state.policy]
    return training_checkpoint(run.raw_model, run.optimizer, run.scaler, run.batches, config=run.config,
                               vocab=run.dataset.vocab, iter_num=state.iter_num, best_val_loss=state.best_val_loss,
                               policy_batches=policy, since_eval=state.since_eval, eval_owed=state.eval_owed)


def restore(checkpoint: dict, optimizer, scaler, batches: Batches) -> State:
    """Continue from a checkpoint: its optimizer, data position and RNG states, and its State
    (what a checkpoint of an earlier version lacks takes its default)."""
    restore_training(checkpoint, optimizer, scaler, batches)
    policy = checkpoint.get("policy_batches") and [[Item(np.array(t), n, done) for t, n, done in micro]
                                                   for micro in checkpoint["policy_batches"]]
    return State(checkpoint["iter_num"], checkpoint["best_val_loss"], policy,
                 checkpoint.get("since_eval", State().since_eval), checkpoint.get("eval_owed", False))


def save(run: Run, state: State, also_best: bool = False) -> None:
    """Write the checkpoint (runfiles.write_checkpoint: a failure stops the run with WriteError)."""
    write_checkpoint(checkpoint_state(run, state), run.config.out_dir, also_best, run.rank, run.world, run.device)


# ----------------------------------------------------------------------------------------------
# One training step, and the loop

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
    non_finite: bool  # the loss was not finite on some process, and no process took the step
    signum: int       # a stop signal some process received (0: none); the step was taken


def accumulate_gradients(run: Run, experts: list[list[Item]], policy: list[list[Item]] | None
                         ) -> tuple[torch.Tensor, int]:
    """Backward over the micro-batches, each in chunks of rows of similar length (data.length_chunks:
    less padding, the same loss); their mean [loss, nll, td] and the tokens computed. Online, expert
    and policy rows share a pass and the value gap couples them, so a micro-batch is one chunk."""
    c, means, n_tokens = run.config, 0.0, 0
    pieces = [(micro, chunk, share) for micro, expert in enumerate(experts)
              for chunk, share in length_chunks(expert, 1 if policy else c.batch_chunks)]
    for i, (micro, chunk, share) in enumerate(pieces):
        sync = run.world == 1 or i == len(pieces) - 1  # DDP all-reduces on the last backward
        weight = share / c.grad_accum
        with contextlib.nullcontext() if sync else run.model.no_sync():
            loss, stats, n = training_loss(run.model, chunk, policy and policy[micro], c, run.device, run.dtype)
            run.scaler.scale(loss * weight).backward()
        means += torch.stack([loss.detach(), stats["nll"], stats["td"]]) * weight
        n_tokens += n
    return means, n_tokens


def train_step(run: Run, state: State, stop: StopSignals) -> Step:
    """One iteration: set the learning rate, sample a policy batch (online, every sample_every
    iterations), accumulate gradients over grad_accum micro-batches, clip, and take the optimizer
    step, unless the loss is not finite on some process: then no process takes it."""
    c, t_start = run.config, time.time()
    lr = lr_at(state.iter_num, c)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    experts = [run.batches.next() for _ in range(c.grad_accum)]
    sample_seconds = 0.0
    if c.mixin > 0 and (state.policy is None or state.iter_num % c.sample_every == 0):
        with autocast(run.device, run.dtype):
            state.policy = [policy_samples(run.raw_model, expert, run.dataset) for expert in experts]
        sample_seconds = time.time() - t_start
    means, n_tokens = accumulate_gradients(run, experts, state.policy)
    grad_norm = torch.zeros(())
    if c.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), c.grad_clip)
    # one all-reduce for both votes: every process skips the same update and stops at the same iteration
    votes = agreed([float(not torch.isfinite(means[0])), float(stop.signum)], run.device, run.world)
    non_finite, signum = bool(votes[0]), int(votes[1])
    if not non_finite:
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        state.iter_num += 1
    seconds = time.time() - t_start
    loss, nll, td = means.tolist()
    return Step(loss, nll, td, lr, float(grad_norm), n_tokens * run.world / max(seconds, 1e-9), seconds,
                sample_seconds, non_finite, signum)


def log_evaluation(run: Run, state: State) -> dict:
    """Evaluate, append the numbers to out_dir/log.jsonl and print them; return them. The ms per
    iteration are state.since_eval's: the time spent updating and sampling since the last evaluation."""
    c, since = run.config, state.since_eval
    result = val_metrics(run.raw_model, run.dataset, run.val_problems, c, run.device, run.dtype)
    per_iter = {f"{k}_ms": 1000 * since[k] / max(since["iters"], 1) for k in ("update", "sample")}
    append_log(c.out_dir, {"iter": state.iter_num, **result, "lr": lr_at(state.iter_num - 1, c), **per_iter})
    tqdm.write(f"iter {state.iter_num}: val nll {result['val_nll']:.4f}, td {result['val_td']:.4f}, "
               f"entropy {result['val_entropy']:.3f}"
               + (f", greedy accuracy {result['accuracy']:.3f}" if "accuracy" in result else "")
               + f", {per_iter['update_ms']:.0f} ms/iter update"
               + (f" + {per_iter['sample_ms']:.0f} sampling" if c.mixin > 0 else ""))
    return result


def evaluates_at(iter_num: int, c: TrainConfig) -> bool:
    return iter_num % c.eval_interval == 0 or iter_num == c.max_iters


def evaluate_and_save(run: Run, state: State) -> None:
    """Rank 0 evaluates and logs; then the checkpoint is saved, and with --keep_best also best.pt
    where the val loss is the lowest yet."""
    improved = False
    if run.rank == 0:
        result = log_evaluation(run, state)
        improved = result["val_loss"] < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, result["val_loss"])
    state.since_eval, state.eval_owed = State().since_eval, False
    save(run, state, also_best=improved and run.config.keep_best)


def stop_line(bar: tqdm, message: str) -> None:
    """The run's last line, on stderr, under the closed progress bar."""
    bar.close()
    print(message, file=sys.stderr)


def train_loop(run: Run, state: State, stop: StopSignals) -> int:
    """Train to max_iters, evaluating and saving every eval_interval iterations and at the end.
    Returns the exit code: 0 done; 128 + signal number when stopped by SIGINT or SIGTERM (saved at
    the iteration it stopped, without evaluating: the evaluation it owes is done first on
    --resume); 1 on a non-finite loss (the update is not taken and not saved). A failed save
    raises WriteError (exit 1), which closes the progress bar before its line is printed."""
    c, master = run.config, run.rank == 0
    with tqdm(total=c.max_iters, initial=state.iter_num, disable=not master, dynamic_ncols=True) as bar:
        if state.eval_owed:
            evaluate_and_save(run, state)
        while state.iter_num < c.max_iters:
            step = train_step(run, state, stop)
            if step.non_finite:
                if master:
                    stop_line(bar, f"error: the loss is not finite at iter {state.iter_num}; stopping "
                                   f"({what_is_kept(c.out_dir)}); try a lower --learning_rate")
                return 1
            state.since_eval["update"] += step.seconds - step.sample_seconds
            state.since_eval["sample"] += step.sample_seconds
            state.since_eval["iters"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{step.loss:.3f}", nll=f"{step.nll:.3f}", td=f"{step.td:.3f}", lr=f"{step.lr:.1e}",
                            gnorm=f"{step.grad_norm:.2f}", tok_s=f"{step.tokens_per_s:.0f}", refresh=False)
            if step.signum:  # save first: a preempted job has seconds, the evaluation can wait
                state.eval_owed = evaluates_at(state.iter_num, c)
                save(run, state)
                if master:
                    stop_line(bar, f"stopped by {signal.Signals(step.signum).name} at iter {state.iter_num}; "
                                   f"saved {checkpoint_path(c.out_dir)}; --resume continues")
                return 128 + step.signum
            if evaluates_at(state.iter_num, c):
                evaluate_and_save(run, state)
    return 0


def announce(run: Run, state: State, resumed: bool) -> None:
    """Rank 0's first line: model, data, device (on CUDA, a step's memory on paper)."""
    c, dataset = run.config, run.dataset
    print(f"{'resuming at iter ' + str(state.iter_num) if resumed else 'training'}: "
          f"{run.raw_model.num_params() / 1e6:.2f}M params, vocab {dataset.vocab.size}, "
          f"{len(dataset.train)} train / {len(dataset.val)} val examples ({dataset.n_dropped} "
          f"too long, dropped), device {run.device}, {str(run.dtype)[6:]}, lambda {c.lam}, {run.world} process(es)")
    if c.mixin > 0 and c.gamma == 1:  # sum_t (V(s_t) - V(s_t+1)) = V(s0) for expert and policy alike
        print("note: with --gamma 1 the online value term nearly cancels (both sides sum to "
              "V(s0)); use --gamma < 1, e.g. 0.9, for its signal", file=sys.stderr)
    if run.device.startswith("cuda"):  # the longest micro-batch: online runs add as many policy rows
        rows = c.batch_size * (2 if c.mixin > 0 else 1)
        print_step_memory(run.raw_model.config, rows, c.block_size, run.device, run.dtype)


def train(argv: list[str] | None = None) -> int:
    """The whole run: configuration, processes, the out_dir lock, starting point, setup, the loop; its
    exit code. Stop signals are noted from the start: one during setup stops after the first iteration."""
    c, given = parse_config(TrainConfig, argv, "train.py", __doc__.split("\n\n")[0])
    check_config(c, settled=not (c.resume or c.init_from))
    with StopSignals() as stop:
        rank, world, device = setup_distributed(c.device)
        with holding_out_dir(c.out_dir, rank, world, device):  # before anything in out_dir is read or written
            c, resumed, source = starting_point(c, given, FIXED_FIELDS, PER_INVOCATION)
            check_config(c, settled=True)  # a resumed run's configuration is the checkpoint's, with the flags given now
            run, state = setup(c, resumed, source, rank, world, device)
            if rank == 0:
                start_log(c.out_dir, resumed and resumed["iter_num"])
                announce(run, state, resumed is not None)
            return train_loop(run, state, stop)


def main(argv: list[str] | None = None) -> int:
    return run_main("train.py", lambda: train(argv))


if __name__ == "__main__":
    sys.exit(main())
