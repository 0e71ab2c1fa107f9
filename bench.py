"""Benchmark: does an offline IQLearn update cost what an MLE update costs? And a GAIL iteration?

Three programs, each with flags of its own: the loss benchmark (the default), `bench.py algorithms`
and `bench.py memory`.

The loss benchmark: one model, one random batch, full training steps (forward, loss, backward, AdamW step) with two
losses, interleaved so that whatever else the machine does slows both alike:
  MLE      F.cross_entropy on the logits (what iqlearn_loss is at lam = 0)
  IQLearn  iqlearn.iqlearn_loss with lam > 0 (nll + lam * td)
Reported: median ms/step, tokens/s, peak memory of a step (and what `runtime.step_memory` predicts
on paper), MFU on CUDA, and IQLearn/MLE ratios.
The paper measured +3.7% (T5-base, 196 vs 189 ms); the loss touches the largest tensor of the
model, the [B, T, V] logits, so a careless one shows up here in time and in memory.

`bench.py algorithms` times whole training iterations instead, from an MLE checkpoint (--init_from)
on the task and batch size of the run that made it, interleaved the same way: train.py's at lambda 0 (MLE) and at
--lam (offline IQLearn), and gail.py's (sampling, discriminator step, rewards, policy step), each
built by its script's setup(). Reported: median ms/iteration, GAIL's parts, the ratios to MLE.
`bench.py memory` prints each GPT-2 size's step memory on paper and runs nothing.

    python bench.py                          # GPT-2 vocabulary, small body: the loss matters
    python bench.py --default_config         # train.py's default run on this device
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --compile
    python bench.py --gpt2 gpt2 --block_size 512 --batch_size 2 --steps 3   # GPT-2 small's shape
    python bench.py memory --batch_size 8 --block_size 512    # each GPT-2 size, on paper
    python bench.py algorithms --init_from out_mle/ckpt.pt    # MLE vs IQLearn vs GAIL iterations
"""

import argparse
import copy
import functools
import itertools
import json
import os
import statistics
import sys
import time
import types
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from errors import CheckpointError, Parser, run_main
from iqlearn import check_coefficients, iqlearn_loss
from data import IGNORE, Batches, collate, length_chunks, load_dataset
from gpt2 import GPT2_SIZES, GPT2_VOCAB
from model import GPT, GPTConfig
from runfiles import load_checkpoint
from runtime import DTYPES, autocast, grad_scaler, param_counts, pick_device, pick_dtype, step_memory


# Dense bf16 (= fp16) tensor-core peak FLOP/s, matched on torch.cuda.get_device_name(), first
# match wins. A float32 run is measured against the same peak, as nanoGPT does.
PEAK_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12)]


def train_defaults() -> dict:
    """train.py's default run, derived from its TrainConfig: the model, the batch and lambda, the
    built-in task's compact vocabulary, its batches' mean padded length, and the share of the
    positions its steps compute that are the data's (useful / computed), with its --batch_chunks
    (data.length_chunks) and in one padded pass for comparison; over 200 batches."""
    from train import TrainConfig, data_spec  # a script's defaults; only --default_config needs them
    c = TrainConfig()
    dataset = load_dataset(data_spec(c), c.block_size)
    batches = Batches(dataset.train, c.batch_size, c.seed)
    rows = [batches.next() for _ in range(200)]
    useful = sum(len(it.tokens) - 1 for items in rows for it in items)
    computed = {k: sum(collate(chunk)[0].size for items in rows for chunk, _ in length_chunks(items, k))
                for k in (c.batch_chunks, 1)}
    return dict(vocab_size=dataset.vocab.size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                n_embd=c.n_embd, batch_size=c.batch_size, seq_len=round(computed[1] / len(rows) / c.batch_size),
                lam=c.lam, batch_chunks=c.batch_chunks, useful_share=useful / computed[c.batch_chunks],
                useful_share_one_pass=useful / computed[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of the program the first word names (`algorithms`, `memory`), else of the loss
    benchmark; each program has a parser of its own, so a flag it has no use for is refused."""
    argv = sys.argv[1:] if argv is None else list(argv)
    program = argv.pop(0) if argv and argv[0] in ("algorithms", "memory") else "loss"
    args = {"loss": loss_args, "algorithms": algorithms_args, "memory": memory_args}[program](argv)
    args.program = program
    return args


def parser(program: str, what: str) -> Parser:
    return Parser(prog=f"bench.py{program}", description=what, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_timing_flags(p: Parser) -> None:
    """The flags of the two programs that time steps."""
    p.add_argument("--lam", type=float, default=0.5, help="IQLearn's TD weight")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                   help="auto: cuda, else mps, else cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="autocast dtype; auto: bf16 on CUDA (fp16 without bf16), else float32")
    p.add_argument("--steps", type=int, default=10, help="timed steps per contender")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def check_timing_flags(p: Parser, args: argparse.Namespace) -> None:
    if args.steps <= 0:
        p.error(f"--steps must be positive, got {args.steps}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    try:
        check_coefficients(lam=args.lam)
    except ValueError as e:
        p.error(f"--lam: {e}")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        p.error(str(e))
    args.dtype = str(pick_dtype(args.dtype, args.device)).removeprefix("torch.")


def add_size_flags(p: Parser, sizes: list[tuple[str, int, str]]) -> None:
    for name, default, what in sizes:
        p.add_argument(f"--{name}", type=int, default=default, help=what)


def check_sizes(p: Parser, args: argparse.Namespace, names: list[str]) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")


BLOCK_AND_BATCH = [("block_size", 256, "= tokens per row"), ("batch_size", 4, "rows per batch")]


def loss_args(argv: list[str]) -> argparse.Namespace:
    p = parser("", __doc__.splitlines()[0] + " (bench.py algorithms, bench.py memory: the other two programs)")
    sizes = [("n_layer", 2, "transformer blocks"), ("n_head", 4, "attention heads"), ("n_embd", 128, "model width"),
             *BLOCK_AND_BATCH, ("vocab_size", 50304, "GPT-2's, padded to a multiple of 64")]
    add_size_flags(p, sizes)
    p.add_argument("--gpt2", default=None, choices=list(GPT2_SIZES),
                   help="this GPT-2's shape, biases and GELU (replaces the sizes but block and batch)")
    add_timing_flags(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak_flops", type=float, default=None,
                   help="device peak FLOP/s for MFU; None: looked up by CUDA device name")
    p.add_argument("--default_config", action="store_true",
                   help="bench train.py's default run: its model, batch, lambda, vocabulary and mean "
                        "padded length (replace the sizes and --lam)")
    args = p.parse_args(argv)
    args.seq_len = args.block_size
    if args.default_config:
        vars(args).update(train_defaults())
    if args.gpt2:
        args.n_layer, args.n_head, args.n_embd = GPT2_SIZES[args.gpt2]
        args.vocab_size = GPT2_VOCAB
    check_sizes(p, args, [name for name, _, _ in sizes])
    if args.n_embd % args.n_head:
        p.error(f"--n_embd {args.n_embd} is not divisible by --n_head {args.n_head}")
    if args.peak_flops is not None and not args.peak_flops > 0:
        p.error(f"--peak_flops must be positive, got {args.peak_flops}")
    check_timing_flags(p, args)
    return args


def algorithms_args(argv: list[str]) -> argparse.Namespace:
    """The checkpoint's run sets the model, the batch and the data; the checkpoint is loaded here
    (args.source), so a bad one is one line too."""
    p = parser(" algorithms", "time whole iterations of MLE, offline IQLearn (--lam) and GAIL from an MLE "
                              "checkpoint, on its run's model, batch and data")
    p.add_argument("--init_from", required=True, help="an MLE checkpoint (train.py's ckpt.pt)")
    add_timing_flags(p)
    args = p.parse_args(argv)
    check_timing_flags(p, args)
    try:
        args.source = load_checkpoint(args.init_from)
    except CheckpointError as e:
        p.error(f"--init_from: {e}")
    return args


def memory_args(argv: list[str]) -> argparse.Namespace:
    p = parser(" memory", "each GPT-2 size's training step memory on paper (runtime.step_memory); no run")
    add_size_flags(p, BLOCK_AND_BATCH)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    check_sizes(p, args, [name for name, _, _ in BLOCK_AND_BATCH])
    return args


def make_batch(args: argparse.Namespace, device: str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens laid out like the training data: a prompt (masked), a response ending in EOS
    (terminal), then padding (masked). Returns idx, targets, done, all [B, T]."""
    g = torch.Generator().manual_seed(0)
    B, T, eos = args.batch_size, args.seq_len, args.vocab_size - 1
    tokens = torch.randint(0, args.vocab_size, (B, T + 1), generator=g)
    idx, targets = tokens[:, :-1], tokens[:, 1:].clone()
    done = torch.zeros(B, T, dtype=torch.bool)
    for b, end in enumerate(torch.randint(T // 2, T, (B,), generator=g).tolist()):
        targets[b, :T // 4] = IGNORE    # prompt
        targets[b, end] = eos           # the response ends here ...
        done[b, end] = True             # ... in a terminal state
        targets[b, end + 1:] = IGNORE   # padding
    return idx.to(device), targets.to(device), done.to(device)


def mle_loss(logits: torch.Tensor, targets: torch.Tensor, done: torch.Tensor, lam: float
             ) -> torch.Tensor:
    """The baseline: cross-entropy, i.e. iqlearn_loss at lam = 0 (lam unused, same signature)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def iq_loss(logits: torch.Tensor, targets: torch.Tensor, done: torch.Tensor, lam: float
            ) -> torch.Tensor:
    """nll + lam * td, with the batch's terminals."""
    return iqlearn_loss(logits, targets, lam=lam, done=done)[0]


def train_step(contender: dict, batch, args: argparse.Namespace) -> None:
    idx, targets, done = batch
    with contender["autocast"]:  # the model in low precision; both losses upcast to float32 themselves
        logits = contender["model"](idx)
    loss = contender["loss"](logits, targets, done, args.lam)
    # Let go of the logits: each loss keeps what its backward saved, no more. (Holding them would
    # cost MLE a [B, T, V] tensor and IQLearn, whose backward saves the logits anyway, nothing.)
    del logits
    contender["scaler"].scale(loss).backward()
    contender["scaler"].step(contender["opt"])
    contender["scaler"].update()
    contender["opt"].zero_grad(set_to_none=True)  # here, so a step starts with no gradients held


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


@contextmanager
def stderr_silenced():
    """The profiler's kineto backend writes 'profiler_start/stop' lines straight to file descriptor
    2, and no setting turns them off."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_step_memory(contender: dict, batch, args: argparse.Namespace) -> int | None:
    """Bytes a step allocates at its peak on top of what is held before it (weights, AdamW state):
    activations, the logits and the loss's buffers, gradients."""
    if args.device == "cuda":
        sync("cuda")
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        train_step(contender, batch, args)
        sync("cuda")
        return torch.cuda.max_memory_allocated() - before
    if args.device == "cpu":
        # tracemalloc does not see torch's CPU allocator, and RSS counts pages, not tensors. The
        # profiler records every allocation and free with its size and time; their running sum,
        # in time order, is the bytes held, and its maximum the peak.
        with stderr_silenced(), profile(activities=[ProfilerActivity.CPU],
                                        profile_memory=True) as prof:
            train_step(contender, batch, args)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        return max(itertools.accumulate((e.nbytes() for e in events), initial=0))
    return None  # MPS has no peak counter


def peak_flops(args: argparse.Namespace) -> float | None:
    if args.peak_flops or args.device != "cuda":
        return args.peak_flops
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


def flops_per_token(model: GPT, args: argparse.Namespace) -> float:
    """Forward + backward FLOPs per token (PaLM appendix B): 6N for the matmuls with the weights,
    N the non-embedding parameters, plus 12*L*H*Q*T for attention over a T-token context."""
    L, H, Q = args.n_layer, args.n_head, args.n_embd // args.n_head
    return 6 * model.num_params() + 12 * L * H * Q * args.seq_len


def make_contenders(base: GPT, args: argparse.Namespace) -> dict[str, dict]:
    """One copy of the model (same weights), its optimizer and its precision setup per loss."""
    dtype = pick_dtype(args.dtype, args.device)
    contenders = {}
    for name, loss in [("mle", mle_loss), ("iqlearn", iq_loss)]:
        model = copy.deepcopy(base)  # each trains its own copy, so neither steps on the other
        contenders[name] = dict(
            model=torch.compile(model) if args.compile else model, loss=loss,
            opt=model.configure_optimizer(weight_decay=0.1, learning_rate=3e-4),
            scaler=grad_scaler(args.device, dtype), autocast=autocast(args.device, dtype))
    return contenders


def time_interleaved(steps: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, list]:
    """Seconds per step of each contender (a function taking one step), alternating contenders step by
    step (and their order), so a busy neighbour or a clock change slows all alike."""
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            sync(args.device)
            t0 = time.perf_counter()
            steps[name]()
            sync(args.device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def loss_ratios(args: argparse.Namespace) -> dict:
    """The losses alone, forward and backward on one [B, T, V] logits tensor, interleaved: IQLearn /
    cross-entropy at initial-like logits (0.02 * N(0, 1), a fresh model's) and at wide-spread ones
    (40 * N(0, 1): within a state they span hundreds of nats, as a trained model's can over a large
    vocabulary). There a careless exp meets the CPU's slow subnormal path (iqlearn.exp_floor)."""
    g = torch.Generator().manual_seed(0)
    _, targets, done = make_batch(args, args.device)
    noise = torch.randn(args.batch_size, args.seq_len, args.vocab_size, generator=g).to(args.device)
    timing = argparse.Namespace(**{**vars(args), "steps": max(args.steps, 20)})

    def step(loss, logits: torch.Tensor) -> None:
        loss(logits.detach().requires_grad_(), targets, done, args.lam).backward()

    result = {}
    for regime, scale in [("initial", 0.02), ("wide", 40.0)]:
        logits = scale * noise
        times = time_interleaved({"mle": functools.partial(step, mle_loss, logits),
                                  "iqlearn": functools.partial(step, iq_loss, logits)}, timing)
        result[f"loss_{regime}_ms"] = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        result[f"loss_ratio_{regime}"] = statistics.median(times["iqlearn"]) / statistics.median(times["mle"])
    return result


def model_config(args: argparse.Namespace) -> GPTConfig:
    gpt2 = args.gpt2 is not None  # GPT-2 has biases and the tanh GELU
    return GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                     n_head=args.n_head, n_embd=args.n_embd, bias=gpt2, gelu_approximate="tanh" if gpt2 else "none")


def benchmark(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    config = model_config(args)
    base = GPT(config)
    contenders = make_contenders(base.to(args.device), args)
    batch = make_batch(args, args.device)
    times = time_interleaved({name: functools.partial(train_step, contender, batch, args)
                              for name, contender in contenders.items()}, args)
    # Memory after timing: the CPU profiler slows the step it watches.
    memory = {name: peak_step_memory(contender, batch, args) for name, contender in contenders.items()}

    tokens = args.batch_size * args.seq_len
    peak, per_token = peak_flops(args), flops_per_token(base, args)
    result = dict(
        **machine(args), compile=args.compile, default_config=args.default_config,
        config={k: getattr(args, k) for k in ["gpt2", "n_layer", "n_head", "n_embd", "vocab_size",
                                              "block_size", "batch_size", "seq_len", "lam"]},
        steps=args.steps, warmup=args.warmup, peak_flops=peak)
    for name in contenders:
        ms = 1e3 * statistics.median(times[name])
        result[f"{name}_ms"] = ms
        result[f"{name}_tokens_per_s"] = tokens / ms * 1e3
        result[f"{name}_peak_mib"] = None if memory[name] is None else memory[name] / 2**20
        result[f"{name}_mfu"] = None if peak is None else per_token * tokens / (ms / 1e3) / peak
    # What train.py's loss (iqlearn_loss, at any lambda) needs on paper, on top of what is held
    # between steps: the measured peaks count the same.
    paper = step_memory(config, args.batch_size, args.seq_len, half=args.dtype != "float32")
    result["paper_peak_mib"] = (paper["peak"] - paper["weights_adamw"]) / 2**20
    result["time_ratio"] = result["iqlearn_ms"] / result["mle_ms"]
    result["mem_ratio"] = None if memory["mle"] is None else memory["iqlearn"] / memory["mle"]
    result["tokens_per_s"], result["mfu"] = result["iqlearn_tokens_per_s"], result["iqlearn_mfu"]
    result.update(loss_ratios(args))
    if args.default_config:
        result.update({k: getattr(args, k) for k in ("batch_chunks", "useful_share", "useful_share_one_pass")})
    return result


def machine(args: argparse.Namespace) -> dict:
    """Where a benchmark ran: device and its name, torch, CPU threads, autocast dtype."""
    return dict(device=args.device, torch=torch.__version__, threads=torch.get_num_threads(),
                device_name=torch.cuda.get_device_name() if args.device == "cuda" else args.device,
                dtype=args.dtype)


def machine_line(r: dict) -> str:
    """machine()'s fields as a report's first line."""
    return f"{r['device_name']} ({r['threads']} threads), torch {r['torch']}, {r['dtype']}"


def print_report(r: dict) -> None:
    c = r["config"]
    print(f"{machine_line(r)}, compile {r['compile']}{', train.py defaults' if r['default_config'] else ''}")
    print(f"model {c['gpt2'] + ' ' if c['gpt2'] else ''}{c['n_layer']}x{c['n_embd']} ({c['n_head']} heads), vocab {c['vocab_size']}, "
          f"block {c['block_size']}; batch {c['batch_size']}x{c['seq_len']} tokens; lam {c['lam']}; "
          f"median of {r['steps']} steps after {r['warmup']} warm-up")
    print(f"{'':8} {'ms/step':>9} {'tokens/s':>10} {'peak MiB':>9} {'MFU':>6}")
    for label, name in [("MLE", "mle"), ("IQLearn", "iqlearn")]:
        mem, mfu = r[f"{name}_peak_mib"], r[f"{name}_mfu"]
        print(f"{label:8} {r[f'{name}_ms']:9.1f} {r[f'{name}_tokens_per_s']:10.0f} "
              f"{'n/a' if mem is None else f'{mem:.1f}':>9} "
              f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%':>6}")
    mem_ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.3f}"
    print(f"IQLearn/MLE: time {r['time_ratio']:.3f}, memory {mem_ratio}")
    print(f"on paper (runtime.step_memory, train.py's loss): {r['paper_peak_mib']:.1f} MiB a step on top of "
          "the weights and AdamW's moments, as the peaks above")
    for regime, what in [("initial", "initial-like logits"), ("wide", "wide-spread logits")]:
        ms = r[f"loss_{regime}_ms"]
        print(f"the loss alone at {what}: IQLearn {ms['iqlearn']:.2f} ms, cross-entropy {ms['mle']:.2f} ms, "
              f"ratio {r[f'loss_ratio_{regime}']:.3f}")
    if r["default_config"]:
        print(f"useful / computed positions of the default run's steps: {r['useful_share']:.3f} "
              f"(--batch_chunks {r['batch_chunks']}); {r['useful_share_one_pass']:.3f} in one padded pass")


def memory_table(batch_size: int, block_size: int) -> list[dict]:
    """`runtime.step_memory` for each published GPT-2 size, with bf16 autocast and in float32."""
    rows = []
    for name, (n_layer, n_head, n_embd) in GPT2_SIZES.items():
        config = GPTConfig(vocab_size=GPT2_VOCAB, block_size=block_size, n_layer=n_layer, n_head=n_head,
                           n_embd=n_embd, bias=True, gelu_approximate="tanh")
        half, full = (step_memory(config, batch_size, block_size, half) for half in (True, False))
        rows.append({"model": name, "params": sum(param_counts(config).values()), **half,
                     "peak_float32": full["peak"]})
    return rows


def print_memory_table(rows: list[dict], batch_size: int, block_size: int) -> None:
    print(f"Peak memory of a training step on paper (runtime.step_memory), GiB: batch {batch_size} x block "
          f"{block_size}, AdamW, bf16 autocast unless said; add about 1 GiB for the CUDA context")
    print(f"{'model':12} {'params':>7} {'weights+AdamW':>14} {'activations':>12} {'logits':>7} "
          f"{'peak bf16':>10} {'peak fp32':>10}")
    gib = 2 ** 30
    for r in rows:
        print(f"{r['model']:12} {r['params'] / 1e6:6.0f}M {r['weights_adamw'] / gib:14.1f} "
              f"{r['activations'] / gib:12.1f} {r['logits'] / gib:7.1f} {r['peak'] / gib:10.1f} "
              f"{r['peak_float32'] / gib:10.1f}")


# ----------------------------------------------------------------------------------------------
# bench.py algorithms: whole iterations of train.py (MLE, IQLearn) and gail.py, from one checkpoint

def run_config(config_class: type, fixed: tuple[str, ...], args: argparse.Namespace, **overrides):
    """config_class's defaults, with what the checkpoint's run fixed (`fixed`: the script's
    FIXED_FIELDS, model shape and data) and its batch size, on this benchmark's device and dtype,
    with no greedy-accuracy problems to prepare (nothing is evaluated)."""
    saved = {k: v for k, v in args.source["config"].items() if k in (*fixed, "batch_size")}
    return config_class(**saved, eval_problems=0, device=args.device, dtype=args.dtype, **overrides)


def algorithm_steps(args: argparse.Namespace) -> tuple[dict[str, Callable[[], object]], list[dict], object]:
    """One training iteration of each algorithm, each on its own copy of the checkpoint's model as its
    script's setup() builds it; the list GAIL's iterations append their statistics to (the timings of
    their parts); and GAIL's configuration."""
    import gail  # scripts; only `bench.py algorithms` needs them
    import train
    steps, gail_stats = {}, []
    for name, lam in [("mle", 0.0), ("iqlearn", args.lam)]:
        run, state = train.setup(run_config(train.TrainConfig, train.FIXED_FIELDS, args, lam=lam), None,
                                 args.source, 0, 1, args.device)
        # train_step reads only the stop signal's number: none here (Ctrl-C stays Python's KeyboardInterrupt)
        steps[name] = functools.partial(train.train_step, run, state, types.SimpleNamespace(signum=0))
    gail_run = gail.setup(run_config(gail.GailConfig, gail.FIXED_FIELDS, args), None, args.source, args.device)
    steps["gail"] = lambda: gail_stats.append(gail.train_step(gail_run))
    return steps, gail_stats, gail_run.config


def algorithms_benchmark(args: argparse.Namespace) -> dict:
    """Median ms per iteration of MLE, IQLearn and GAIL, interleaved; GAIL's parts; the ratios to MLE."""
    steps, gail_stats, gail_config = algorithm_steps(args)
    times = time_interleaved(steps, args)
    shape = {k: args.source["model_args"][k] for k in ["n_layer", "n_head", "n_embd", "vocab_size", "block_size"]}
    result = dict(**machine(args), init_from=args.init_from, steps=args.steps, warmup=args.warmup,
                  config={**shape, "batch_size": gail_config.batch_size, "lam": args.lam,
                          "disc_steps": gail_config.disc_steps})
    for name in steps:
        result[f"{name}_ms"] = 1e3 * statistics.median(times[name])
    for part in ["sample", "disc", "policy"]:
        result[f"gail_{part}_ms"] = 1e3 * statistics.median(s[f"{part}_s"] for s in gail_stats[args.warmup:])
    for name in ["iqlearn", "gail"]:
        result[f"{name}_ratio"] = result[f"{name}_ms"] / result["mle_ms"]
    return result


def print_algorithms_report(r: dict) -> None:
    """algorithms_benchmark's result as a table: ms/iteration and the ratio to MLE, then GAIL's parts."""
    c = r["config"]
    print(machine_line(r))
    print(f"whole iterations from {r['init_from']}: model {c['n_layer']}x{c['n_embd']} ({c['n_head']} heads), "
          f"vocab {c['vocab_size']}, block {c['block_size']}; batch {c['batch_size']}; IQLearn lam {c['lam']}; "
          f"GAIL {c['disc_steps']} discriminator step(s); median of {r['steps']} after {r['warmup']} warm-up")
    print(f"{'':8} {'ms/iter':>9} {'vs MLE':>7}")
    for label, name in [("MLE", "mle"), ("IQLearn", "iqlearn"), ("GAIL", "gail")]:
        print(f"{label:8} {r[f'{name}_ms']:9.1f} {r[f'{name}_ms'] / r['mle_ms']:7.2f}")
    print(f"GAIL's parts (medians, ms): sampling {r['gail_sample_ms']:.0f}, discriminator step(s) and rewards "
          f"{r['gail_disc_ms']:.0f}, policy step {r['gail_policy_ms']:.0f}")


def bench(args: argparse.Namespace) -> int:
    """The program its flags ask for, printed as a report (or --json)."""
    if args.program == "memory":
        result = memory_table(args.batch_size, args.block_size)
        report = functools.partial(print_memory_table, batch_size=args.batch_size, block_size=args.block_size)
    elif args.program == "algorithms":
        result, report = algorithms_benchmark(args), print_algorithms_report
    else:
        result, report = benchmark(args), print_report
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("bench.py", lambda: bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
