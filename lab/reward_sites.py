"""Where the extracted reward sits (Results §11): r_t = Q(s_t, a_t) − γ V(s_t+1) of each model's own
samples of test problems, averaged over the answer's tokens (after "####", the final number) and
over every other token, for right and for wrong samples. The paper's reading of GSM8K is that wrong
answers look right except for the number; a reward that knows the task would put a wrong sample's
loss there."""

import json
import os
import time

from lab import registry
from lab.registry import SHIFT_IQ, SHIFT_MLE_TUNED
from lab.results import read_json
from lab.runner import THREADS, train_run, write_provenance

METHODS = [SHIFT_MLE_TUNED, *SHIFT_IQ[:2]]   # the tuned MLE, the recipe + head, λ = 0.5 + head
SEEDS, PROBLEMS, SAMPLES = (1, 2, 3), 100, 5
SITES = ("answer, right", "answer, wrong", "elsewhere, right", "elsewhere, wrong")


def sites_of(name: str) -> dict[str, float]:
    """One run's mean reward per token at each site, over its samples of the first test problems."""
    import torch
    from data import Vocab, answer_marker, correct
    from runfiles import checkpoint_path, load_checkpoint, model_from_checkpoint
    from sample import load_problems, score
    checkpoint = load_checkpoint(checkpoint_path(os.path.join(registry.RUNS, name)))
    model = model_from_checkpoint(checkpoint).eval()
    vocab = Vocab.from_state(checkpoint["vocab"])
    problems, _ = load_problems(checkpoint, vocab, "test", PROBLEMS, model.config.block_size)
    prompts = [p.prompt for p in problems for _ in range(SAMPLES)]
    torch.manual_seed(0)
    with torch.no_grad():
        responses = model.generate(prompts, 128, temperature=1.0, eos_id=vocab.eos)
        scored = score(model, prompts, responses, checkpoint["config"]["gamma"], vocab.eos)
    sums = {site: [0.0, 0] for site in SITES}
    marker = answer_marker(vocab)
    for i, (response, s) in enumerate(zip(responses, scored)):
        right = "right" if correct(vocab, response, problems[i // SAMPLES]) else "wrong"
        after = False
        for token, reward in zip(response, s.reward):
            site = "answer" if after and token != vocab.eos else "elsewhere"
            sums[f"{site}, {right}"][0] += reward
            sums[f"{site}, {right}"][1] += 1
            after = after or token == marker
    return {site: total / n if n else None for site, (total, n) in sums.items()}


def measure_reward_sites() -> None:
    import torch
    torch.set_num_threads(THREADS)
    began, found = time.time(), {}
    for method in METHODS:
        for seed in SEEDS:
            train_run(method.run(seed))
            found[method.name(seed)] = sites_of(method.name(seed))
    kept = os.path.join(registry.RESULTS, "reward_sites")
    os.makedirs(kept, exist_ok=True)
    with open(os.path.join(kept, "rewards.json"), "w") as f:
        json.dump({"problems": PROBLEMS, "samples": SAMPLES, "split": "test", "temperature": 1.0, "runs": found},
                  f, indent=1)
    write_provenance("reward_sites", {"command": "python experiments.py --only reward_sites",
                                      "seconds": round(time.time() - began, 1)})


def reward_sites() -> dict | None:
    path = os.path.join(registry.RESULTS, "reward_sites", "rewards.json")
    return read_json(path, lines=False) if os.path.exists(path) else None


def reward_sites_report() -> str:
    from lab.stats import interval_text
    found = reward_sites()
    if not found:
        return ""
    lines = [f"### Where the reward sits: mean r_t per token of each model's own samples ({found['problems']} test "
             f"problems × {found['samples']} at T = 1)\n",
             "| method | " + " | ".join(SITES) + " | answer: wrong − right (paired) |", "|---" * (len(SITES) + 2) + "|"]
    for method in METHODS:
        runs = [found["runs"][method.name(s)] for s in SEEDS if method.name(s) in found["runs"]]
        cells = [interval_text([r[site] for r in runs], word=False, plain=True) for site in SITES]
        gap = [r["answer, wrong"] - r["answer, right"] for r in runs
               if r["answer, wrong"] is not None and r["answer, right"] is not None]
        lines.append(f"| {method.label} | " + " | ".join(cells) + f" | {interval_text(gap, sign=-1)} |")
    return "\n".join(lines)
