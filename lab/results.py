"""Reading what the runs left in results/<name>/: the training log, the evaluation (one JSON line
per sampling temperature) and run.json. A file that is not what it should be is a UserError naming
it, not a traceback."""

import json
import os
import re

from errors import UserError
from lab import registry
from lab.registry import MLE, Method


def read_json(path: str, lines: bool = True) -> list[dict] | dict:
    """A JSON-lines file's records (lines=True), or one JSON document."""
    try:
        with open(path, encoding="utf-8") as f:
            if not lines:
                return json.load(f)
            return [json.loads(line) for line in f if line.strip()]
    except (ValueError, RecursionError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} is damaged ({type(e).__name__}): restore it from git or rerun that run") from None


def log_of(name: str, root: str | None = None) -> list[dict]:
    """The log.jsonl of a run, kept (results/) or retrained (root = runs/)."""
    path = os.path.join(root or registry.RESULTS, name, "log.jsonl")
    log = read_json(path)
    if not log:
        raise UserError(f"{path} is empty")
    return log


def facts_of(name: str) -> dict:
    """results/<name>/run.json ({} if the run has none)."""
    path = os.path.join(registry.RESULTS, name, "run.json")
    if not os.path.exists(path):
        return {}
    return read_json(path, lines=False)


def evaluations(name: str, result_file: str = "eval.json") -> list[dict] | None:
    """The rows a run's `sample.py --eval --json` left in results/<name>/ (one per temperature),
    each with what the run's log adds; None if the run has none yet."""
    path = os.path.join(registry.RESULTS, name, result_file)
    if not os.path.exists(path):
        return None
    log = log_of(name)
    from_log = {"val_td": log[-1].get("val_td"), "val_entropy": log[-1]["val_entropy"],   # GAIL logs no td
                "curve": {e["iter"]: e.get("accuracy") for e in log},
                "nll_curve": {e["iter"]: e["val_nll"] for e in log},
                # per iteration, averaged over the run
                **{k: sum(e[k] for e in log) / len(log) for k in ("update_ms", "sample_ms")}}
    rows = [{**row, **from_log} for row in read_json(path)]
    for row in rows:
        row["beam_minus_greedy"] = row["accuracy_beam"] - row["accuracy_greedy"]
        row["beam_minus_sample"] = row["accuracy_beam"] - row["accuracy_sample"]
    return rows


def load(name: str, result_file: str = "eval.json", temperature: float = 1.0) -> dict | None:
    """One run's evaluation at one sampling temperature (None if it has none)."""
    rows = evaluations(name, result_file)
    return next((r for r in rows if r["temperature"] == temperature), None) if rows else None


def seeds_of(method: Method, result_file: str = "eval.json") -> list[int]:
    """Every seed of a method whose evaluation is in results/: tables use all the seeds that exist,
    not only the plan's first ones."""
    if not os.path.isdir(registry.RESULTS):
        return []
    found = (re.fullmatch(re.escape(method.prefix) + r"_s(\d+)", entry) for entry in os.listdir(registry.RESULTS))
    return sorted(int(m.group(1)) for m in found
                  if m and os.path.exists(os.path.join(registry.RESULTS, m.group(0), result_file)))


def frontier_curves(method: Method) -> dict[int, list[dict]]:
    """seed -> that run's rows, one per temperature, for every seed evaluated so far."""
    found = {seed: evaluations(method.name(seed), "frontier.json") for seed in seeds_of(method, "frontier.json")}
    return {seed: sorted(rows, key=lambda r: r["temperature"]) for seed, rows in found.items() if rows}


def base_accuracy(seed: int) -> float:
    """Greedy accuracy (200 val problems) of the MLE model the protocol's runs of this seed start
    from: the last evaluation of its from-scratch run."""
    return log_of(MLE.name(seed))[-1]["accuracy"]


def largest_fall(method: Method, seed: int) -> float:
    """How far the run's greedy accuracy fell below its MLE base at its worst evaluation (negative:
    it stayed above the base at every evaluation)."""
    return base_accuracy(seed) - min(e["accuracy"] for e in log_of(method.name(seed)))
