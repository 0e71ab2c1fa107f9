"""Is GAIL's discriminator blind, or is there nothing to see (Results §11)? A fresh discriminator
of gail.py's kind, given every chance: trained for many steps on a fixed set of a frozen policy's
samples against the expert's rows of the same prompts, then scored on held-out prompts, over all
tokens and at the answer's tokens (gail.answer_accuracy). The same instrument on expert rows whose
only change is the final number (another problem's answer) shows what it can see when there is
something at the answer: its ceiling there."""

import json
import os
import time

import numpy as np

from lab import registry
from lab.registry import SHIFT_MLE
from lab.results import read_json
from lab.runner import THREADS, train_run, write_provenance

POLICY = SHIFT_MLE.run(1)   # the MLE fine-tune on the shifted task, frozen at its last iteration
STEPS, BATCH, LEARNING_RATE, SAMPLES_PER_PROMPT = 600, 32, 5e-4, 2


def planted(records: list[dict], rng: np.random.Generator) -> list[dict]:
    """The expert's rows with the final number swapped for another row's (a different number)."""
    answers = [r["response"].rsplit("#### ", 1) for r in records]
    out = []
    for head, number in answers:
        other = next(n for _, n in (answers[i] for i in rng.permutation(len(answers))) if n != number)
        out.append(head + "#### " + other)
    return [{"prompt": r["prompt"], "response": w} for r, w in zip(records, out)]


def train_and_score(expert_train, other_train, expert_val, other_val, vocab, config, seed: int) -> dict:
    """A fresh discriminator trained on expert vs other rows; its accuracies on the val rows."""
    import torch
    from data import answer_marker, collate
    from gail import answer_accuracy, answer_positions, discriminator_loss
    from model import GPT
    torch.manual_seed(seed)
    disc = GPT(config)
    optimizer = disc.configure_optimizer(0.1, LEARNING_RATE)
    rng = np.random.default_rng(seed)

    def batch(expert, other, rows):
        items = [expert[i] for i in rows] + [other[i] for i in rows]
        x, y, _ = (torch.from_numpy(a) for a in collate(items, with_last_state=True))
        return x, y, torch.arange(len(items)) < len(rows)

    for _ in range(STEPS):
        x, y, is_expert = batch(expert_train, other_train, rng.choice(len(expert_train), BATCH, replace=False))
        loss, _ = discriminator_loss(disc(x), y, is_expert)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
        optimizer.step()
    disc.eval()
    found = {"overall": [], "answer": []}
    with torch.no_grad():
        for i in range(0, len(expert_val), BATCH):
            x, y, is_expert = batch(expert_val, other_val, range(i, min(i + BATCH, len(expert_val))))
            d = disc(x)
            found["overall"].append(float(discriminator_loss(d, y, is_expert)[1]))
            answer = answer_positions(y, answer_marker(vocab), vocab.eos)
            found["answer"].append(float(answer_accuracy(d, y, is_expert, answer)))
    return {k: sum(v) / len(v) for k, v in found.items()}


def measure_disc_ceiling() -> None:
    """Train the policy if it is not there, sample it, train the discriminators, keep the numbers."""
    import torch
    from data import Vocab, load_dataset, pair_item, policy_samples
    from model import GPTConfig
    from runfiles import checkpoint_path, load_checkpoint, model_from_checkpoint
    torch.set_num_threads(THREADS)
    began, trained = time.time(), train_run(POLICY)
    checkpoint = load_checkpoint(checkpoint_path(os.path.join(registry.RUNS, POLICY.name)))
    policy = model_from_checkpoint(checkpoint)
    vocab = Vocab.from_state(checkpoint["vocab"])
    dataset = load_dataset(checkpoint["data_spec"], policy.config.block_size, vocab)
    val = dataset.val[:300]
    torch.manual_seed(0)
    with torch.no_grad():
        sampled = lambda items: [s for i in range(0, len(items), 64) for s in policy_samples(policy, items[i:i + 64],
                                                                                          dataset)]
        train_expert = dataset.train * SAMPLES_PER_PROMPT
        train_samples, val_samples = sampled(train_expert), sampled(val)
    rng = np.random.default_rng(0)
    item = lambda r: pair_item(vocab, r["prompt"], r["response"])
    wrong_train = [item(r) for r in planted(dataset.records["train"], rng)] * SAMPLES_PER_PROMPT
    wrong_val = [item(r) for r in planted(dataset.records["val"][:300], rng)]
    config = GPTConfig(**{**checkpoint["model_args"], "value_head": False})   # the policy's size: gail.py's default
    results = {"policy": POLICY.name, "steps": STEPS, "batch": BATCH, "learning_rate": LEARNING_RATE,
               "train_rows": len(train_expert), "val_rows": len(val), "against": {}}
    for label, train_other, val_other in (("policy samples", train_samples, val_samples),
                                          ("final number changed", wrong_train, wrong_val)):
        results["against"][label] = [train_and_score(train_expert, train_other, val, val_other, vocab, config, seed)
                                     for seed in (1, 2, 3)]
    kept = os.path.join(registry.RESULTS, "disc_ceiling")
    os.makedirs(kept, exist_ok=True)
    with open(os.path.join(kept, "ceiling.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_provenance("disc_ceiling", {"command": "python experiments.py --only disc_ceiling",
                                      "policy_training": trained, "seconds": round(time.time() - began, 1)})


def disc_ceiling_report() -> str:
    from lab.stats import interval_text
    path = os.path.join(registry.RESULTS, "disc_ceiling", "ceiling.json")
    if not os.path.exists(path):
        return ""
    found = read_json(path, lines=False)
    lines = [f"### GAIL's discriminator given every chance ({found['steps']} steps of {found['batch']} + "
             f"{found['batch']} rows on {found['train_rows']} fixed rows a side; {found['val_rows']} held-out "
             f"prompts; 3 discriminator seeds; policy {found['policy']})\n",
             "| expert against | balanced accuracy, all tokens | at the answer's tokens |", "|---|---|---|"]
    for label, runs in found["against"].items():
        lines.append(f"| {label} | " + " | ".join(interval_text([r[k] for r in runs], word=False, plain=True)
                                                   for k in ("overall", "answer")) + " |")
    return "\n".join(lines)
