"""The reason for the null, measured (Results §9): is the recipe's policy an MLE policy at another
temperature? On the val expert responses' action positions, the mean per-token
KL(π_method ‖ softmax(z_MLE / T)) minimised over a grid of T, against the same quantity between two
MLE seeds (the noise floor). It needs the checkpoints, so it retrains them (runs/ is not kept)."""

import functools
import json
import os
import time

from errors import UserError
from lab import registry
from lab.registry import ALL_RUNS, MLE, RECIPE, SWEEP
from lab.results import read_json
from lab.runner import THREADS, same_log, train_run, write_provenance
from lab.stats import interval_text

NULL_REASON = [("MLE", MLE), ("recipe (λ = 0.1, γ = 0.9)", RECIPE), ("λ = 0.5 (γ = 1)", SWEEP[0.5])]
NULL_REASON_SEEDS = (1, 2, 3)
KL_TEMPERATURES = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))   # 0.5, 0.55, ..., 3.0


@functools.lru_cache(maxsize=2)
def val_records(data_spec: str) -> list[dict]:
    """The val split of a checkpoint's data (JSON of its data_spec), built once for all checkpoints."""
    from data import load_records
    return load_records(json.loads(data_spec))["val"]


def response_logits(name: str):
    """A checkpoint's logits at every action position of the val expert responses, [positions, vocab],
    and what fixes those positions (vocabulary and data), so that models can be compared row by row."""
    import torch
    from data import IGNORE, Vocab, collate, fitting_pairs
    from runfiles import checkpoint_path, load_checkpoint, model_from_checkpoint
    checkpoint = load_checkpoint(checkpoint_path(os.path.join(registry.RUNS, name)))
    model = model_from_checkpoint(checkpoint).eval()
    vocab = Vocab.from_state(checkpoint["vocab"])
    items = [it for _, it in fitting_pairs(vocab, val_records(json.dumps(checkpoint["data_spec"], sort_keys=True)),
                                           model.config.block_size)]
    rows = []
    with torch.no_grad():
        for i in range(0, len(items), 50):
            x, y, _ = (torch.from_numpy(a) for a in collate(items[i:i + 50]))
            rows.append(model(x).float()[y != IGNORE])
    return torch.cat(rows), json.dumps([checkpoint["vocab"], checkpoint["data_spec"]], sort_keys=True, default=str)


def tempered_kl(source, reference) -> list[float]:
    """Mean over positions of KL(softmax(source) ‖ softmax(reference / T)), for each T in KL_TEMPERATURES."""
    import torch
    logp = torch.log_softmax(source.double(), dim=-1)
    p = logp.exp()
    return [(p * (logp - torch.log_softmax(reference.double() / t, dim=-1))).sum(-1).mean().item()
            for t in KL_TEMPERATURES]


def null_reason_numbers(seeds: list[int]) -> dict:
    """Per seed s, with r the next seed (cyclically) as the reference MLE: each policy's KL to the
    best tempered MLE_r, the floor being MLE_s's own; also to MLE_s itself (same init and data order)."""
    import torch
    torch.set_num_threads(THREADS)
    logits, fixed = {}, set()
    for _, method in NULL_REASON:
        for s in seeds:
            logits[method, s], key = response_logits(method.name(s))
            fixed.add(key)
    if len(fixed) != 1:
        raise UserError("the checkpoints differ in vocabulary or data; positions do not match")
    pairs = []
    for i, s in enumerate(seeds):
        for reference in (seeds[(i + 1) % len(seeds)], s):
            for label, method in NULL_REASON:
                if method == MLE and reference == s:
                    continue  # a model against itself
                kl = tempered_kl(logits[method, s], logits[MLE, reference])
                best = min(range(len(kl)), key=kl.__getitem__)
                pairs.append({"policy": label, "run": method.name(s), "reference": MLE.name(reference),
                              "same_seed": reference == s, "kl_at_T1": kl[KL_TEMPERATURES.index(1.0)],
                              "kl_min": kl[best], "best_T": KL_TEMPERATURES[best], "kl_by_T": kl})
    return {"seeds": seeds, "temperatures": list(KL_TEMPERATURES), "positions": len(logits[MLE, seeds[0]]),
            "pairs": pairs}


def measure_null_reason() -> None:
    """Train (with the plan's exact flags) the checkpoints the measurement needs, seed by seed, check
    each retrained log against the kept one, and write results/null_reason/ after every seed from
    the second on, so that an interrupted measurement keeps what it has."""
    kept = os.path.join(registry.RESULTS, "null_reason")
    os.makedirs(kept, exist_ok=True)
    began, trainings, checks = time.time(), [], []
    for k, seed in enumerate(NULL_REASON_SEEDS, start=1):
        for _, method in NULL_REASON:   # (a run already trained to its end is not trained again)
            trainings.append({"name": method.name(seed), **train_run(ALL_RUNS[method.name(seed)])})
            checks.append(same_log(method.name(seed)))
        if k < 2:
            continue
        numbers = null_reason_numbers(list(NULL_REASON_SEEDS[:k]))
        with open(os.path.join(kept, "kl.json"), "w") as f:
            json.dump({**numbers, "log_checks": checks}, f, indent=1, ensure_ascii=False)
        write_provenance("null_reason", {"command": "python experiments.py --only null_reason",
                                         "trainings": trainings, "seconds": round(time.time() - began, 1)})


def best_temperatures(rows: list[dict]) -> str:
    return ", ".join(f"{p['best_T']:g}" for p in rows)


def null_reason_report() -> str:
    path = os.path.join(registry.RESULTS, "null_reason", "kl.json")
    if not os.path.exists(path):
        return ""
    found = read_json(path, lines=False)
    lines = ["### The reason for the null: distance to a tempered MLE\n",
             f"Mean per-token KL(π ‖ softmax(z_MLE / T)) in nats over {found['positions']} val expert response "
             f"positions, minimised over T ∈ [{found['temperatures'][0]:g}, {found['temperatures'][-1]:g}] "
             f"(step 0.05); seeds {', '.join(map(str, found['seeds']))}; the reference MLE is another seed's "
             "(the next, cyclically), and the floor is the KL of an MLE seed to that same reference.\n",
             "| policy | T that fits best (per seed) | KL at T = 1 | KL at the best T | − the MLE floor (paired; claim > 0: farther than a seed) |",
             "|---|---|---|---|---|"]
    other = [p for p in found["pairs"] if not p["same_seed"]]
    floor = {p["run"].rsplit("_s", 1)[1]: p["kl_min"] for p in other if p["policy"] == "MLE"}
    for label, _ in NULL_REASON:
        rows = [p for p in other if p["policy"] == label]
        diffs = [p["kl_min"] - floor[p["run"].rsplit("_s", 1)[1]] for p in rows]
        lines.append(f"| {label} | {best_temperatures(rows)} | "
                     f"{interval_text([p['kl_at_T1'] for p in rows], word=False, digits=4, plain=True)} | "
                     f"{interval_text([p['kl_min'] for p in rows], word=False, digits=4, plain=True)} | "
                     + ("(the floor)" if label == "MLE" else interval_text(diffs, digits=4)) + " |")
    same = [p for p in found["pairs"] if p["same_seed"]]
    if same:
        lines += ["", "Against the MLE of the *same* seed (same initialisation and data order):", "",
                  "| policy | T that fits best (per seed) | KL at T = 1 | KL at the best T |", "|---|---|---|---|"]
        for label, _ in NULL_REASON[1:]:
            rows = [p for p in same if p["policy"] == label]
            lines.append(f"| {label} | {best_temperatures(rows)} | "
                         f"{interval_text([p['kl_at_T1'] for p in rows], word=False, digits=4, plain=True)} | "
                         f"{interval_text([p['kl_min'] for p in rows], word=False, digits=4, plain=True)} |")
    for label, _ in NULL_REASON[1:]:   # how much of the distance at T = 1 a temperature explains
        rows = [p for p in other if p["policy"] == label]
        shares = [(p["kl_at_T1"] - p["kl_min"]) / p["kl_at_T1"] for p in rows]
        lines.append(f"\nTempering removes a share {interval_text(shares, word=False)} of the {label}'s KL at T = 1.")
    checks = found.get("log_checks", [])
    differ = [c["name"] for c in checks if not c["log_equal"]]
    lines += ["", f"Retrained checkpoints (runs/ is not kept): {len(checks) - len(differ)} of {len(checks)} logs "
              "equal the kept results/<name>/log.jsonl (timings aside)"
              + (f"; differ: {', '.join(differ)}" if differ else "") + "."]
    for c in checks:
        if not c["log_equal"]:
            lines.append(f"- {c['name']}: kept last {c['kept_last']}, retrained last {c['retrained_last']}")
    return "\n".join(lines)
