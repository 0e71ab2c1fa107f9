"""Sample from a trained model, evaluate it, and look at the rewards it has learned.

    python sample.py --out_dir out                        # 5 samples of the first val problem
    python sample.py --out_dir out --num_problems 5 --num_samples 1   # one each of the first 5
    python sample.py --out_dir out --start "Ann has 3 pens. ... How many?\n" --num_samples 3
    python sample.py --out_dir out --start FILE:prompt.txt --beam 4
    python sample.py --out_dir out --eval [--json]        # accuracy, diversity, nll, rewards
    python sample.py --out_dir out --eval --calculator    # GSM8K: also greedy with a calculator
    python sample.py --out_dir out --rewards              # one sample with r_t and V(s_t) per token

The measurements are the paper's (Wulfmeier et al. 2024): task accuracy under greedy decoding,
sampling and beam search (IQLearn should need beam search less than MLE), Self-BLEU diversity
(IQLearn should keep more), and how well the extracted return R = sum_t r_t tracks correctness.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from calculator import Calculator
from data import (IGNORE, DataError, Item, Problem, Vocab, accuracy, answers_checkable, collate, correct,
                  extract_answer, greedy_accuracy, is_correct, load_dataset, load_records, problems_from, prompt_ids,
                  text_of)
from errors import CheckpointError, Parser, UserError, run_main
from iqlearn import implicit_rewards, soft_value
from metrics import distinct_n, self_bleu, spearman, within_problem_spearman
from model import GPT, cut_after_eos, left_pad
from runfiles import load_checkpoint, model_from_checkpoint, reason
from runtime import MAX_SEED, pick_device


EVAL_BEAM = 4   # --eval's beam width unless --beam says another: the paper's beam-dependence measurement


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="sample.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--out_dir", default="out", help="the run whose ckpt.pt to load")
    a("--start", default=None, help="prompt text, or FILE:path; default: problems of the val split")
    a("--num_samples", type=int, default=None,
      help="samples of each prompt (the --start prompt, or each problem); default 5; one if decoding is deterministic")
    a("--max_new_tokens", type=int, default=256, help="at most this many (and never past block_size)")
    a("--temperature", type=temperatures, default=[1.0],
      help="0 = greedy; with --eval a comma-separated grid, e.g. 0.5,0.7,1.0,1.3 (one row each)")
    a("--top_k", type=int, default=None, help="sample from the k most likely tokens only")
    a("--beam", type=int, default=None, help="beam search of this width (1 = greedy): decode with it, or with "
      f"--eval the width that accuracy_beam measures (default {EVAL_BEAM} there)")
    a("--seed", type=int, default=1337, help="of the sampling generator")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--eval", action="store_true", help="measure accuracy, diversity, nll, rewards")
    mode.add_argument("--rewards", action="store_true", help="show one sample's r_t and V(s_t) per token")
    a("--json", action="store_true",
      help="with --eval: JSON Lines, one object per temperature (greedy, beam and nll repeated in each)")
    a("--calculator", action="store_true",
      help="with --eval: greedy accuracy with a calculator filling in each <<expr= too (GSM8K)")
    a("--split", default="val", choices=["val", "test"], help="whose problems, when there is no --start")
    a("--num_problems", type=int, default=None, help="the first this many problems of --split, when there is no "
      "--start; default 200 with --eval, else 1")
    a("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    args = p.parse_args(argv)
    if not 0 <= args.seed <= MAX_SEED:
        p.error(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    if args.beam is not None and args.beam < 1:
        p.error(f"--beam must be >= 1, got {args.beam}")
    if len(args.temperature) > 1 and not args.eval:
        p.error("a grid of temperatures goes with --eval")
    for flag in ("num_samples", "max_new_tokens", "num_problems", "top_k"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.json and not args.eval:
        p.error("--json goes with --eval")
    if args.calculator and not args.eval:
        p.error("--calculator goes with --eval")
    if args.eval and args.start is not None:
        p.error("--eval measures the --split problems; it takes no --start")
    if args.rewards and (args.num_samples or args.num_problems):
        p.error("--rewards shows one sample of one prompt; it takes no --num_samples or --num_problems")
    if args.start is not None and args.num_problems:
        p.error("--num_problems counts --split problems; a --start prompt is one")
    # The defaults that depend on the mode, set once, here.
    args.num_samples = args.num_samples or 5
    args.num_problems = args.num_problems or (200 if args.eval else 1)
    args.beam = args.beam or (EVAL_BEAM if args.eval else None)
    return args


def temperatures(text: str) -> list[float]:
    """--temperature's value: one number, or a comma-separated grid; each finite and >= 0."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a comma-separated list: {text!r}") from None
    if not all(math.isfinite(t) and t >= 0 for t in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers >= 0, got {text}")
    return values


# ----------------------------------------------------------------------------------------------
# Decoding: sampling (model.generate, KV cache, batched) and beam search

@torch.no_grad()
def beam_search(model: GPT, prompts: list[list[int]], width: int, max_new_tokens: int,
                eos_id: int) -> list[tuple[list[int], float]]:
    """The continuation y of each prompt x with the best length-normalised log-probability
    log pi(y|x) / |y| (EOS counted) that a beam of `width` finds, and its log pi(y|x).

    All problems' beams run as one batch of len(prompts) * width rows on the KV cache. Each step
    every beam proposes every token; the `width` best candidates of a problem by normalised score
    survive and the cache follows them (KVCache.reorder). A finished beam stays a candidate with
    its final score, so the search stops once a problem's best `width` candidates have all ended.
    """
    device = next(model.parameters()).device
    N, W = len(prompts), width
    idx, n_pad = left_pad([p for p in prompts for _ in range(W)], device)
    steps = min(max_new_tokens, model.config.block_size - idx.size(1))
    cache = model.new_cache(n_pad)
    logp_sum = torch.zeros(N, W, device=device)
    logp_sum[:, 1:] = -math.inf   # the W beams start as copies of one: let only the first expand
    length = torch.zeros(N, W, device=device)
    finished = torch.zeros(N, W, dtype=torch.bool, device=device)
    tokens = torch.zeros(N, W, 0, dtype=torch.long, device=device)
    V = model.config.vocab_size
    frozen = torch.full((V,), -math.inf, device=device)  # a finished beam's one continuation:
    frozen[eos_id] = 0.0                                  # EOS again, at no cost and no length
    for _ in range(steps):
        logp = F.log_softmax(model(idx, cache, last_only=True)[:, -1].float(), dim=-1).view(N, W, V)
        logp = torch.where(finished[..., None], frozen, logp)
        total = (logp_sum[..., None] + logp).view(N, W * V)
        new_length = (length + (~finished).float()).repeat_interleave(V, dim=1)
        best = (total / new_length).topk(W, dim=-1).indices   # [N, W] indices into W * V
        beam, token = best // V, best % V
        cache.reorder((torch.arange(N, device=device)[:, None] * W + beam).view(-1))
        logp_sum, length = total.gather(1, best), new_length.gather(1, best)
        tokens = torch.cat([tokens.gather(1, beam[..., None].expand(-1, -1, tokens.size(2))),
                            token[..., None]], dim=2)
        finished = finished.gather(1, beam) | (token == eos_id)
        if finished.all():
            break
        idx = token.view(-1, 1)
    choice = (logp_sum / length).argmax(dim=1)
    return [(cut_after_eos(tokens[i, choice[i]].tolist(), eos_id), logp_sum[i, choice[i]].item())
            for i in range(N)]


def beam_search_all(model: GPT, prompts: list[list[int]], width: int, max_new_tokens: int,
                    eos_id: int) -> list[list[int]]:
    n = max(1, model.rows_per_batch() // width)
    return [tokens for i in range(0, len(prompts), n)
            for tokens, _ in beam_search(model, prompts[i:i + n], width, max_new_tokens, eos_id)]


# ----------------------------------------------------------------------------------------------
# Teacher forcing: log-probabilities, values and implicit rewards of given responses

@dataclass
class Scored:
    """Per response token a_t: log pi(a_t|s_t), V(s_t) = logsumexp Q(s_t, .), and the implicit
    reward r_t = Q(s_t, a_t) - gamma V(s_{t+1}), with V = 0 after EOS."""
    logp: list[float]
    value: list[float]
    reward: list[float]


@torch.no_grad()
def score(model: GPT, prompts: list[list[int]], responses: list[list[int]], gamma: float,
          eos_id: int) -> list[Scored]:
    """One forward pass over prompt + response per row, batched by data.collate. The input holds
    the response's last token too (with_last_state), so a response cut off without EOS still gets
    V(s_{t+1}) for its last reward. Rows go in order of length, at most 64 at a time, so a batch is
    padded to little more than its own rows (sampled responses vary in length a lot)."""
    device = next(model.parameters()).device
    block, n = model.config.block_size, min(64, model.rows_per_batch())
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    out = [None] * len(prompts)
    for i in range(0, len(order), n):
        rows = order[i:i + n]
        pairs = [(prompts[j], responses[j]) for j in rows]
        items = [Item(np.array(p + r), len(p), r[-1:] == [eos_id]) for p, r in pairs]
        # A row of block + 1 tokens (a text window) keeps its targets; its last state has no room.
        x, y, done = (torch.from_numpy(a[:, :block]).to(device) for a in collate(items, with_last_state=True))
        logits = model(x).float()
        value = soft_value(logits)
        logp = logits.gather(-1, y.clamp(min=0)[..., None])[..., 0] - value
        reward = implicit_rewards(logits, y, gamma=gamma, done=done, ignore_index=IGNORE)
        for b, (j, (p, r)) in enumerate(zip(rows, pairs)):
            span = slice(len(p) - 1, len(p) + len(r) - 1)  # s_0 is the state after the prompt
            out[j] = Scored(logp[b, span].tolist(), value[b, span].tolist(), reward[b, span].tolist())
    return out


# ----------------------------------------------------------------------------------------------
# Problems and evaluation

def load_problems(checkpoint: dict, vocab: Vocab, split: str, limit: int, block_size: int
                  ) -> tuple[list[Problem], bool]:
    """The first `limit` problems of a split that fit the block, and whether their answers are
    checkable ('#### N'). Text data has no prompts: its val windows are cut after a quarter."""
    if "data_spec" not in checkpoint:
        raise CheckpointError("this checkpoint does not say what data it was trained on; pass --start")
    records = load_records(checkpoint["data_spec"])
    if records is None:  # running text
        if split != "val":
            raise DataError("text data has only a val split")
        cut = max(1, block_size // 4)
        windows = load_dataset(checkpoint["data_spec"], block_size, vocab).val[:limit]
        return [Problem(item.tokens[:cut].tolist(), item.tokens[cut:].tolist(),
                        vocab.decode(item.tokens[cut:].tolist())) for item in windows], False
    if split not in records:
        raise DataError(f"this checkpoint's data has no {split} split")
    problems = problems_from(vocab, records[split], block_size, limit)
    if not problems:
        raise DataError(f"no {split} problem fits in block_size={block_size} tokens")
    return problems, answers_checkable([p.reference for p in problems])


def measure(model: GPT, vocab: Vocab, problems: list[Problem], checkable: bool, args: argparse.Namespace,
             gamma: float, device: str) -> list[dict]:
    """The paper's measurements on `problems`, one row per sampling temperature: accuracy (greedy
    and beam, the same in every row, and with --calculator also greedy with GSM8K's calculator, as
    the paper reports both; sampled), diversity of the samples (Self-BLEU, also among
    correct ones only, and distinct-2), val nll, and how each sample's extracted return
    R = sum_t r_t ranks its correctness. Each temperature's samples are drawn from a generator
    seeded afresh with --seed, so a row equals a single-temperature call's."""
    began, eos, prompts = time.time(), vocab.eos, [p.prompt for p in problems]
    references = score(model, prompts, [p.response for p in problems], gamma, eos)
    shared = {  # None (n/a) where answers are not checkable
        "accuracy_greedy": greedy_accuracy(model, vocab, problems, args.max_new_tokens) if checkable else None,
        "accuracy_beam": accuracy(vocab, beam_search_all(model, prompts, args.beam, args.max_new_tokens, eos),
                                  problems) if checkable else None,
        "accuracy_greedy_calculator": accuracy(vocab, model.generate(
            prompts, args.max_new_tokens, temperature=0.0, eos_id=eos, forced=Calculator(vocab)), problems)
            if checkable and args.calculator else None,
        "nll": -sum(sum(s.logp) for s in references) / sum(len(s.logp) for s in references),
        "num_problems": len(problems), "num_samples": args.num_samples, "top_k": args.top_k,
        "beam": args.beam, "split": args.split}
    rows = []
    for temperature in args.temperature:
        generator = torch.Generator(device).manual_seed(args.seed)
        rows.append({**shared, "temperature": temperature,
                     **sample_measurements(model, vocab, problems, checkable, args, temperature, gamma, generator)})
    for row in rows:
        row["seconds"] = round(time.time() - began, 2)  # the whole call's
    return rows


def sample_measurements(model: GPT, vocab: Vocab, problems: list[Problem], checkable: bool, args: argparse.Namespace,
            temperature: float, gamma: float, generator: torch.Generator) -> dict:
    """The measurements of --num_samples samples per problem at one temperature."""
    S, eos = args.num_samples, vocab.eos
    repeated = [p for p in problems for _ in range(S)]   # problem i's samples are rows i*S .. i*S+S-1
    samples = model.generate([p.prompt for p in repeated], args.max_new_tokens, temperature, args.top_k,
                             eos, generator)
    texts = [text_of(vocab, s) for s in samples]
    ok = [checkable and correct(vocab, s, p) for s, p in zip(samples, repeated)]
    returns = [sum(s.reward) for s in score(model, [p.prompt for p in repeated], samples, gamma, eos)]
    per_problem = lambda xs: [xs[i:i + S] for i in range(0, len(xs), S)]
    groups = per_problem(texts)
    correct_groups = [[t for t, good in zip(g, oks) if good] for g, oks in zip(groups, per_problem(ok))]
    distinct = [d for d in map(distinct_n, groups) if d is not None]
    within, n_within = within_problem_spearman(per_problem(returns), per_problem(ok))
    return {
        "accuracy_sample": sum(ok) / len(ok) if checkable else None,
        "self_bleu": self_bleu(groups),
        "self_bleu_correct": self_bleu(correct_groups) if checkable else None,
        "distinct_2": sum(distinct) / len(distinct) if distinct else None,   # per problem, averaged
        "reward_spearman": spearman(returns, [float(good) for good in ok]) if checkable else None,
        "reward_spearman_within": within if checkable else None,
        "reward_within_problems": n_within,
        "reward_mean": sum(returns) / len(returns),
    }


# IQLearn's implicit rewards, read from the policy's logits. A GAIL checkpoint (gail.py) has none:
# its reward is its discriminator's, so for it these are n/a.
IMPLICIT_REWARD_KEYS = ("reward_spearman", "reward_spearman_within", "reward_within_problems", "reward_mean")
SHARED_NOTES = {"accuracy_greedy": "", "accuracy_beam": "beam width {beam}",
                "accuracy_greedy_calculator": "greedy, a calculator fills in <<expr= (--calculator)",
                "nll": "per token of the reference responses"}
SAMPLED_COLUMNS = ("temperature", "accuracy_sample", "self_bleu", "self_bleu_correct", "distinct_2",
                   "reward_spearman", "reward_spearman_within", "reward_mean")


def table(rows: list[dict], checkpoint: dict) -> str:
    """The measurements as text: what is shared once, then one line per temperature."""
    c, first = checkpoint["config"], rows[0]
    cell = lambda v: "n/a" if v is None else f"{v:.4f}"
    method = "GAIL" if checkpoint.get("algorithm") == "gail" else f"lambda {c.get('lam')}"
    lines = [f"{first['num_problems']} {first['split']} problems, {method}, gamma {c.get('gamma')}, "
             f"iter {checkpoint['iter_num']}: {first['seconds']:.1f} s"]
    for key, note in SHARED_NOTES.items():
        if key != "accuracy_greedy_calculator" or first[key] is not None:  # only with --calculator
            lines.append(f"  {key:<26}{cell(first[key]):>10}   {note.format(**first)}")
    if first["accuracy_greedy"] is None:
        lines.append("  (answers are not checkable ('#### N'): no accuracies, no reward correlations)")
    if checkpoint.get("algorithm") == "gail":
        lines.append("  (a GAIL run: the reward columns are IQLearn's implicit rewards, meaningless for it: n/a)")
    lines.append(f"  {first['num_samples']} samples per problem at each temperature. self_bleu: lower = more "
                 "diverse (_correct: among correct samples); distinct_2: higher = more diverse;\n"
                 "  reward_spearman: R = sum_t r_t vs correct, pooled over problems (_within: per problem, "
                 "averaged); reward_mean: mean R of the samples")
    lines.append("  " + "  ".join(f"{k:>{max(len(k), 10)}}" for k in SAMPLED_COLUMNS))
    for row in rows:
        lines.append("  " + "  ".join(f"{cell(row[k]):>{max(len(k), 10)}}" for k in SAMPLED_COLUMNS))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The reward viewer

def token_label(vocab: Vocab, token: int) -> str:
    """A token as one visible cell: escapes for newlines, a ␣ for each space of a blank token."""
    text = "<eos>" if token == vocab.eos else repr(vocab.decode([token]))[1:-1]
    return text if text.strip() else "\u2423" * len(text)


def show_rewards(vocab: Vocab, prompt: list[int], response: list[int], scored: Scored, gamma: float,
                 reference: str, width: int = 100) -> None:
    """The sample's tokens with log pi(a_t|s_t), r_t and V(s_t) in columns under each token."""
    text = text_of(vocab, response)
    verdict = ""
    if extract_answer(reference) is not None:
        verdict = f"  [{'correct' if is_correct(text, reference) else 'wrong'}: reference {extract_answer(reference):g}]"
    print(f"prompt: {vocab.decode(prompt)!r}\nsample: {text!r}{verdict}")
    R, logp = sum(scored.reward), sum(scored.logp)
    print(f"R = sum_t r_t = {R:.3f} over {len(response)} tokens; log pi(y|x) = {logp:.3f}; V(s_0) = {scored.value[0]:.3f}")
    if response[-1] != vocab.eos:
        print("(cut off before EOS: the last state's value is not 0, so with gamma = 1 "
              "R = V(s_0) + log pi(y|x) - V(s_T))")
    elif gamma == 1:  # the sum telescopes: sum_t (log pi + V(s_t) - V(s_t+1)), V = 0 after EOS
        print(f"(gamma = 1: R = V(s_0) + log pi(y|x) = {scored.value[0] + logp:.3f})")
    print(f"r_t = Q(s_t, a_t) - gamma V(s_t+1) = log pi(a_t|s_t) + V(s_t) - gamma V(s_t+1), gamma = {gamma:g}")
    rows = {"token": [token_label(vocab, t) for t in response], "log pi": [f"{v:.2f}" for v in scored.logp],
            "r_t": [f"{v:.2f}" for v in scored.reward], "V(s_t)": [f"{v:.2f}" for v in scored.value]}
    cols = [max(len(cells[t]) for cells in rows.values()) + 1 for t in range(len(response))]
    start = 0
    while start < len(response):  # wrap: as many columns per line as fit in `width`
        end, used = start + 1, 8 + cols[start]
        while end < len(response) and used + cols[end] <= width:
            used, end = used + cols[end], end + 1
        print()
        for name, cells in rows.items():
            print(f"{name:<8}" + "".join(cells[t].rjust(cols[t]) for t in range(start, end)))
        start = end


# ----------------------------------------------------------------------------------------------

def read_prompt(start: str, vocab: Vocab, block_size: int) -> list[int]:
    """--start's tokens: its text, or FILE:path's; an empty one is the start of a text (EOS alone,
    data.prompt_ids), for unconditional samples."""
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        if not os.path.isfile(path):
            raise UserError(f"--start file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                start = f.read()
        except UnicodeDecodeError:
            raise UserError(f"--start file {path} is not UTF-8 text") from None
        except OSError as e:
            raise UserError(f"--start file {path} is not readable ({reason(e)})") from None
    prompt = prompt_ids(vocab, start)
    if len(prompt) >= block_size:
        raise UserError(f"the prompt is {len(prompt)} tokens; block_size {block_size} leaves no room to generate")
    return prompt


def sample_or_evaluate(args: argparse.Namespace) -> int:
    """Load the run's checkpoint, then one of the three jobs: --eval, --rewards, or samples."""
    device = pick_device(args.device)
    checkpoint = load_checkpoint(os.path.join(args.out_dir, "ckpt.pt"))
    model = model_from_checkpoint(checkpoint).to(device).eval()
    vocab = Vocab.from_state(checkpoint["vocab"])
    job = evaluate if args.eval else view_rewards if args.rewards else print_samples
    return job(model, checkpoint, vocab, args, device)


def chosen_problems(checkpoint: dict, vocab: Vocab, args: argparse.Namespace, block_size: int) -> list[Problem]:
    """The --start prompt (with no reference), or the first --num_problems problems of --split."""
    if args.start is not None:
        return [Problem(read_prompt(args.start, vocab, block_size), [], "")]
    return load_problems(checkpoint, vocab, args.split, args.num_problems, block_size)[0]


def decode(model: GPT, prompts: list[list[int]], args: argparse.Namespace, eos: int, device: str) -> list[list[int]]:
    """Beam search with --beam, else sampling at --temperature (0: greedy) from the --top_k tokens."""
    if args.beam:
        return beam_search_all(model, prompts, args.beam, args.max_new_tokens, eos)
    generator = torch.Generator(device).manual_seed(args.seed)
    return model.generate(prompts, args.max_new_tokens, args.temperature[0], args.top_k, eos, generator)


def evaluate(model: GPT, checkpoint: dict, vocab: Vocab, args: argparse.Namespace, device: str) -> int:
    """--eval: the measurements on the first --num_problems problems, as a table or JSON Lines."""
    problems, checkable = load_problems(checkpoint, vocab, args.split, args.num_problems, model.config.block_size)
    rows = measure(model, vocab, problems, checkable, args, checkpoint["config"]["gamma"], device)
    if checkpoint.get("algorithm") == "gail":
        rows = [{**row, **dict.fromkeys(IMPLICIT_REWARD_KEYS)} for row in rows]
    print("\n".join(map(json.dumps, rows)) if args.json else table(rows, checkpoint))
    return 0


def print_samples(model: GPT, checkpoint: dict, vocab: Vocab, args: argparse.Namespace, device: str) -> int:
    """--num_samples samples of each prompt (one if decoding is deterministic), each printed after
    its prompt with whether the answer is right where it can be checked."""
    deterministic = args.beam or args.temperature[0] == 0
    problems = chosen_problems(checkpoint, vocab, args, model.config.block_size)
    repeated = [p for p in problems for _ in range(1 if deterministic else args.num_samples)]
    for problem, output in zip(repeated, decode(model, [p.prompt for p in repeated], args, vocab.eos, device)):
        print(vocab.decode(problem.prompt) + text_of(vocab, output))
        if extract_answer(problem.reference) is not None:
            print(f"[{'correct' if correct(vocab, output, problem) else 'wrong'}: "
                  f"the reference answer is {extract_answer(problem.reference):g}]")
        print("---------------")
    return 0


def view_rewards(model: GPT, checkpoint: dict, vocab: Vocab, args: argparse.Namespace, device: str) -> int:
    """--rewards: one decoded response to the prompt, with r_t and V(s_t) at each of its tokens."""
    if checkpoint.get("algorithm") == "gail":
        raise UserError("--rewards shows IQLearn's implicit rewards; a GAIL run's reward is its discriminator's")
    problem = chosen_problems(checkpoint, vocab, args, model.config.block_size)[0]
    output = decode(model, [problem.prompt], args, vocab.eos, device)[0]
    gamma = checkpoint["config"]["gamma"]
    scored = score(model, [problem.prompt], [output], gamma, vocab.eos)[0]
    show_rewards(vocab, problem.prompt, output, scored, gamma, problem.reference)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("sample.py", lambda: sample_or_evaluate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
