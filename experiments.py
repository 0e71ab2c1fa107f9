"""Rerun the Results (docs/results.md): every experiment with train.py and `sample.py --eval`, then
print the tables (markdown) from what the runs left behind.

    python experiments.py                  # everything (many hours on 2 CPU cores)
    python experiments.py --only sweep     # one group; finished runs are skipped, so it resumes
    python experiments.py --only quickstart          # the README quick start's two commands
    python experiments.py --only null_reason         # KL of the recipe to a tempered MLE (Results §9)
    python experiments.py --only gail,gail_frontier,gail_controls --plot   # GAIL against IQLearn (§10)
    python experiments.py --report         # only print the tables of the runs that exist
    python experiments.py --only frontier --plot   # the frontier; its tables and figures/*.png
    python experiments.py --provenance NAME        # how, where and from which code a run was made

Each run is `python train.py <flags> --out_dir runs/<name>` (`gail.py` for GAIL's) followed by
`python sample.py --out_dir runs/<name> --eval --json` (the frontier: 300 problems at a grid of
temperatures). Checkpoints stay in runs/ (not in git); what the tables and figures need, each
run's log.jsonl and its evaluation (eval.json, or frontier.json with one JSON line per
temperature), is kept in results/<name>/ with run.json (the exact commands, commit, torch, CPU,
threads, wall time), so they rebuild on any machine and a run whose result is there is skipped.
The tables are mean ± standard error over seeds; a claim rests on a paired 95% Student's t
interval and the one rule of CLAIM_RULE (holds / does not hold / within noise).
"""

import argparse
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# The experiments use a narrower model than train.py's default (128 wide instead of 256): three
# times cheaper, so that all of them fit in about an hour on two CPU cores.
MODEL = ["--n_embd", "128", "--n_head", "4"]
ITERS = 1200           # iterations of a from-scratch run, as in the default recipe
SMALL_ITERS = 600      # small-data runs: 600 x 32 examples = 38 epochs of 500 problems
SEEDS = (1, 2, 3)
FRONTIER_SEEDS = (1, 2, 3, 4, 5)
ENTROPY_COEFS = (0.01, 0.03, 0.1)
# GAIL (gail.py) from the same MLE bases as the fine-tuning protocol: (run name prefix, flags).
GAIL_VARIANTS = (("gail_mle1", []), ("gail_shuffled_mle1", ["--shuffle_rewards"]), ("gail_mle0", ["--mle_weight", "0"]))
GAIL_CONTROLS = (("gail_shuffled_mle0", ["--shuffle_rewards", "--mle_weight", "0"]),)
# MLE -> MLE, -> IQLearn (λ = 0.5 + head; the recipe + head), -> GAIL
GAIL_FRONTIER = ("finetune_lam0", "finetune_head_lam0.5", "gail_mle1", "finetune_head_gamma0.9_lam0.1")
RUNS, RESULTS = "runs", "results"   # checkpoints (not kept in git); logs and evaluations (kept)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
LAMBDAS = (0.0, 0.01, 0.1, 0.5, 1.0)
EVAL = ["--eval", "--json", "--num_problems", "200", "--num_samples", "5"]
QUICKSTART_EVAL = ["--eval", "--json"]   # the README's `sample.py --eval`, as JSON
TEMPERATURES = "0.5,0.7,1.0,1.3"
FRONTIER_EVAL = ["--eval", "--json", "--num_problems", "300", "--num_samples", "5", "--temperature", TEMPERATURES]
METRICS = ("accuracy_greedy", "accuracy_sample", "accuracy_beam", "self_bleu", "self_bleu_correct",
           "distinct_2", "reward_spearman", "nll")


def lam_name(lam: float) -> str:
    return f"{lam:g}"


def mle_base(seed: int) -> str:
    """The checkpoint the fine-tuning protocol starts from: the from-scratch MLE run of this seed."""
    return os.path.join(RUNS, f"sweep_lam0_s{seed}", "ckpt.pt")


def plan() -> dict[str, list[tuple[str, list[str]]]]:
    """Every run: group -> [(name, flags of the script that trains it: script(name))]. Runs that
    start from another run's checkpoint come after it."""
    common = MODEL + ["--max_iters", str(ITERS), "--eval_interval", "200"]
    finetune = ["--max_iters", "400", "--eval_interval", "100", "--warmup_iters", "0",
                "--learning_rate", "5e-4", "--min_lr", "5e-5"]
    recipe = ["--lambda", "0.1", "--gamma", "0.9"]
    # The README's quick start: its two commands exactly (train.py's default model and flags).
    quickstart = [("quickstart_lam0.5", ["--lambda", "0.5"]), ("quickstart_lam0", ["--lambda", "0"])]
    groups = {"quickstart": quickstart, "sweep": [], "protocol": [], "remedies": [], "small_data": [], "online": [], "value_head": [],
              "frontier": [], "gail": [], "gail_frontier": [], "gail_controls": []}
    for seed in SEEDS:
        s = ["--seed", str(seed)]
        for lam in LAMBDAS:
            groups["sweep"].append((f"sweep_lam{lam_name(lam)}_s{seed}", common + s + ["--lambda", str(lam)]))
        base = mle_base(seed)
        for lam in (0.0, 0.01, 0.1, 0.5):
            groups["protocol"].append((f"finetune_lam{lam_name(lam)}_s{seed}",
                                       finetune + s + ["--init_from", base, "--lambda", str(lam)]))
        groups["remedies"] += [
            (f"gamma0.9_lam0.1_s{seed}", common + s + recipe),
        ]
        small = MODEL + ["--max_iters", str(SMALL_ITERS), "--eval_interval", "100", "--task_train", "500"] + s
        groups["small_data"] += [
            (f"small_mle_s{seed}", small + ["--lambda", "0"]),
            (f"small_entropy_s{seed}", small + ["--lambda", "0", "--entropy_coef", "0.01"]),
            (f"small_lam0.5_s{seed}", small + ["--lambda", "0.5"]),
        ]
        online = ["--mixin", "0.1", "--sample_every", "4"]
        groups["online"] += [
            (f"online_mix0.1_s{seed}", common + s + ["--lambda", "0.5"] + online),
            (f"online_gamma0.9_lam0.1_s{seed}", common + s + recipe + online),
        ]
        # The protocol with and without a value head (its from-scratch runs are in the frontier).
        groups["value_head"] += [run for run in groups["protocol"][-4:] if "lam0.01" not in run[0]]
        for lam in (0.1, 0.5):
            groups["value_head"].append((f"finetune_head_lam{lam_name(lam)}_s{seed}", finetune + s + [
                "--init_from", base, "--lambda", str(lam), "--value_head"]))
        groups["value_head"].append((f"finetune_head_gamma0.9_lam0.1_s{seed}", finetune + s + [
            "--init_from", base, *recipe, "--value_head"]))
    # GAIL (gail.py takes the same flags) from the protocol's MLE bases, each variant through all
    # its seeds, after the IQLearn it is compared with that the value-head group does not already
    # evaluate (the recipe + head); the frontier evaluates GAIL beside MLE -> MLE and IQLearn.
    known = dict(groups["value_head"])
    groups["gail"] += [(name, known[name]) for name in known if name.startswith("finetune_head_gamma0.9_lam0.1")]
    for group, variants in (("gail", GAIL_VARIANTS), ("gail_controls", GAIL_CONTROLS)):
        groups[group] += [(f"{prefix}_s{seed}", finetune + ["--seed", str(seed), "--init_from", mle_base(seed)] + extra)
                          for prefix, extra in variants for seed in SEEDS]
    known = dict([*groups["value_head"], *groups["gail"]])
    groups["gail_frontier"] += [(f"{prefix}_s{seed}", known[f"{prefix}_s{seed}"]) for prefix in GAIL_FRONTIER
                                for seed in SEEDS]
    # The frontier compares methods from scratch across sampling temperatures; MLE and the recipe
    # get more seeds, since their difference is the verdict. The order is the order of importance,
    # each method through all its seeds, so that an interrupted group leaves whole comparisons.
    frontier = groups["frontier"]
    for seed in FRONTIER_SEEDS:
        s = ["--seed", str(seed)]
        frontier += [(f"sweep_lam0_s{seed}", common + s + ["--lambda", "0"]),
                     (f"gamma0.9_lam0.1_s{seed}", common + s + recipe)]
    methods = [("head_gamma0.9_lam0.1", recipe + ["--value_head"])]
    methods += [(f"entropy{lam_name(coef)}", ["--lambda", "0", "--entropy_coef", str(coef)]) for coef in ENTROPY_COEFS]
    methods += [(f"sweep_lam{lam_name(lam)}", ["--lambda", str(lam)]) for lam in (0.5, 0.01, 0.1)]
    methods += [(f"head_lam{lam_name(lam)}", ["--lambda", str(lam), "--value_head"]) for lam in (0.1, 0.5)]
    for prefix, flags in methods:
        # λ = 0.01 looked positive on 2 seeds, as the recipe had: it gets the recipe's 5
        seeds = FRONTIER_SEEDS if prefix == "sweep_lam0.01" else SEEDS
        frontier += [(f"{prefix}_s{seed}", common + ["--seed", str(seed)] + flags) for seed in seeds]
    return groups


def needs(flags: list[str]) -> str | None:
    """The run whose checkpoint this run starts from (--init_from), if any."""
    if "--init_from" not in flags:
        return None
    return os.path.basename(os.path.dirname(flags[flags.index("--init_from") + 1]))


def script(name: str) -> str:
    """The program that trains a run: gail.py for GAIL's runs, train.py for every other."""
    return "gail.py" if name.startswith("gail") else "train.py"


def train_run(name: str, flags: list[str], all_runs: dict[str, list[str]]) -> dict:
    """Train one run into runs/<name>, unless its checkpoint is already there (an interrupted
    run is resumed; a finished one is a no-op). A run that starts from another run's checkpoint
    trains that one first, so a fresh machine with only results/ can rebuild what it needs.
    Returns what the provenance records: the command as run, its wall time, whether it resumed."""
    out = os.path.join(RUNS, name)
    base = needs(flags)
    if base and not os.path.exists(os.path.join(RUNS, base, "ckpt.pt")):
        train_run(base, all_runs[base], all_runs)
    resumed = os.path.exists(os.path.join(out, "ckpt.pt"))
    planned = command = ["python", script(name), *flags, "--out_dir", out]
    if resumed:   # the checkpoint holds the flags; only how far to train is given again
        length = ["--max_iters", flags[flags.index("--max_iters") + 1]] if "--max_iters" in flags else []
        command = ["python", script(name), "--resume", *length, "--out_dir", out]
    print(f"== {name}: {' '.join(command)}", flush=True)
    began = time.time()
    with open(os.path.join(RUNS, f"{name}.log"), "a") as log:
        subprocess.run([sys.executable, *command[1:]], check=True, env=ONE_THREAD, stdout=log,
                       stderr=subprocess.STDOUT)
    return {"train_command": " ".join(planned), "train_seconds": round(time.time() - began, 1),
            "train_resumed": resumed, **({"resumed_with": " ".join(command)} if resumed else {})}


def train_and_evaluate(name: str, flags: list[str], eval_flags: list[str], result_file: str,
                       all_runs: dict[str, list[str]]) -> None:
    """Train (if needed) and evaluate one run, one thread per run (jobs run side by side). What a
    report needs is kept in results/<name>/: the log, the evaluation and run.json (how, where and
    at which commit it ran). A run whose result is there is skipped."""
    kept = os.path.join(RESULTS, name)
    if os.path.exists(os.path.join(kept, result_file)):
        return
    trained = train_run(name, flags, all_runs)
    out = os.path.join(RUNS, name)
    command = ["python", "sample.py", "--out_dir", out, *eval_flags]
    began = time.time()
    result = subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True, text=True,
                            env=ONE_THREAD)
    os.makedirs(kept, exist_ok=True)
    if os.path.exists(os.path.join(kept, "log.jsonl")):   # evaluated a second way: the kept log stays
        trained["log_equals_kept"] = same_log(name)["log_equal"]
    else:
        shutil.copyfile(os.path.join(out, "log.jsonl"), os.path.join(kept, "log.jsonl"))
    with open(os.path.join(kept, result_file), "w") as f:
        f.write(result.stdout)
    write_provenance(name, {**trained, "sample_command": " ".join(command),
                            "eval_seconds": round(time.time() - began, 1)}, result_file)


# ----------------------------------------------------------------------------------------------
# Provenance: results/<name>/run.json says how, where and from which code a run was made.

UNKNOWN = "unknown"   # what could not be recovered for a run made before run.json existed


def git(*args: str) -> str:
    try:
        # (only the trailing newline goes: `git status --porcelain` lines begin with a space)
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.rstrip("\n")
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def machine() -> dict:
    """This machine and code, as a run made now records them."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = UNKNOWN
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": UNKNOWN if changed == UNKNOWN else [line[3:] for line in changed.splitlines()],
            "torch": torch_version, "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "threads": int(ONE_THREAD["OMP_NUM_THREADS"]),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else UNKNOWN,
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_provenance(name: str, facts: dict, result_file: str = "eval.json") -> None:
    """results/<name>/run.json. A run evaluated a second way (a fine-tuned run's frontier.json
    beside its eval.json) keeps the first record and gains the second under the result's name."""
    path = os.path.join(RESULTS, name, "run.json")
    record = {"name": name, **facts, **machine()}
    if result_file != "eval.json" and os.path.exists(os.path.join(RESULTS, name, "eval.json")) and os.path.exists(path):
        with open(path) as f:
            record = {**json.load(f), result_file: record}
    with open(path, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")


def eval_command(name: str, result_file: str) -> str:
    flags = QUICKSTART_EVAL if name.startswith("quickstart") else FRONTIER_EVAL if result_file == "frontier.json" else EVAL
    return " ".join(["python", "sample.py", "--out_dir", os.path.join(RUNS, name), *flags])


def backfill_provenance() -> list[str]:
    """run.json for every results/ folder made before experiments.py wrote one: the commands follow
    from plan() (the folder's name), the evaluation's time from sample.py's own "seconds"; what
    cannot be recovered is "unknown". committed_in is the commit that added the folder to git,
    not the code that ran it."""
    flags = {name: f for runs in plan().values() for name, f in runs}
    written = []
    for name in sorted(os.listdir(RESULTS)):
        folder = os.path.join(RESULTS, name)
        if name not in flags or os.path.exists(os.path.join(folder, "run.json")):
            continue
        result_file = next((f for f in ("frontier.json", "eval.json") if os.path.exists(os.path.join(folder, f))), None)
        if result_file is None:
            continue
        with open(os.path.join(folder, result_file)) as f:
            seconds = [json.loads(line).get("seconds") for line in f if line.strip()]
        added = git("log", "--diff-filter=A", "--format=%H", "--", folder).splitlines()
        facts = {"name": name, "backfilled": True,
                 "train_command": " ".join(["python", script(name), *flags[name], "--out_dir", os.path.join(RUNS, name)]),
                 "train_seconds": UNKNOWN, "train_resumed": UNKNOWN,
                 "sample_command": eval_command(name, result_file),
                 "eval_seconds": seconds[0] if seconds and seconds[0] is not None else UNKNOWN,
                 "commit": UNKNOWN, "uncommitted_changes": UNKNOWN, "torch": UNKNOWN, "python": UNKNOWN,
                 "cpu": UNKNOWN, "cpu_count": UNKNOWN, "threads": UNKNOWN, "finished_utc": UNKNOWN,
                 "committed_in": added[-1] if added and added != [UNKNOWN] else UNKNOWN}
        with open(os.path.join(folder, "run.json"), "w") as f:
            json.dump(facts, f, indent=1, ensure_ascii=False)
            f.write("\n")
        written.append(name)
    return written


def provenance(name: str) -> str:
    path = os.path.join(RESULTS, name, "run.json")
    if not os.path.exists(path):
        return f"{name}: no {path}"
    with open(path) as f:
        facts = json.load(f)
    width = max(map(len, facts))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in facts.items())


# ----------------------------------------------------------------------------------------------
# Report

def evaluations(name: str, result_file: str = "eval.json") -> list[dict] | None:
    """The rows a run's `sample.py --eval --json` left in results/<name>/ (one per temperature),
    each with what the run's log adds; None if the run has none yet."""
    path = os.path.join(RESULTS, name, result_file)
    if not os.path.exists(path):
        return None
    log = [json.loads(line) for line in open(os.path.join(RESULTS, name, "log.jsonl"))]
    from_log = {"val_td": log[-1].get("val_td"), "val_entropy": log[-1]["val_entropy"],   # GAIL logs no td
                "curve": {e["iter"]: e.get("accuracy") for e in log},
                "nll_curve": {e["iter"]: e["val_nll"] for e in log},
                # per iteration, averaged over the run
                **{k: sum(e[k] for e in log) / len(log) for k in ("update_ms", "sample_ms")}}
    rows = [{**json.loads(line), **from_log} for line in open(path) if line.strip()]
    for row in rows:
        row["beam_minus_greedy"] = row["accuracy_beam"] - row["accuracy_greedy"]
        row["beam_minus_sample"] = row["accuracy_beam"] - row["accuracy_sample"]
    return rows


def load(name: str, result_file: str = "eval.json", temperature: float = 1.0) -> dict | None:
    """One run's evaluation at one sampling temperature (None if it has none)."""
    rows = evaluations(name, result_file)
    return next((r for r in rows if r["temperature"] == temperature), None) if rows else None


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


# Student's t distribution: the 0.975 quantile for n - 1 degrees of freedom (published tables,
# e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), so that mean ± T_975[n - 1] x s.e. is a 95% interval.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}


def t_interval(values: list[float]) -> tuple[float, float, float, float] | None:
    """(mean, s.e., low, high): the 95% interval of the mean by Student's t with n - 1 degrees of
    freedom. For paired data pass the per-seed differences. None for fewer than 2 values."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if len(values) < 2:
        return None
    m, se = mean_and_se(values)
    half = T_975[len(values) - 1] * se
    return m, se, m - half, m + half


CLAIM_RULE = ("A claim that a difference is positive (or negative) **holds** when the whole 95% interval of the "
              "difference (mean ± t₀.₉₇₅,ₙ₋₁ × s.e. over n paired seeds, Student's t) lies on the claimed side of "
              "zero, **does not hold** when the whole interval lies on the other side, and is **within noise** when "
              "the interval contains zero; then its ends bound the difference either way. One seed gives no "
              "interval and no word.")


def claim_word(low: float, high: float, sign: int = 1) -> str:
    """The one rule of the Results (CLAIM_RULE): what a 95% interval [low, high] of a difference says
    about the claim that the difference has this sign (+1: positive, -1: negative)."""
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (sign > 0) else "does not hold"
    return "within noise"


def signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def interval_text(values: list[float], sign: int = 1, word: bool = True, digits: int = 3, plain: bool = False) -> str:
    """'+m ± se [low, high] (n = k): word' for a claim of the given sign, or the one value. plain:
    no sign on the numbers (a quantity, not a difference)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    number = lambda x: (f"{x:.{digits}f}" if plain else f"{x:+.{digits}f}").replace("-", "−")
    found = t_interval(values)
    if found is None:
        return f"{number(values[0])} (n = 1)"
    m, se, low, high = found
    text = f"{number(m)} ± {se:.{digits}f} [{number(low)}, {number(high)}] (n = {len(values)})"
    return text + f": {claim_word(low, high, sign)}" if word else text


def mean_se(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    m, se = mean_and_se(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {se:.3f}"


NOT_KEPT = "(no run of this table is kept in results/: its numbers are from an unkept earlier round)"


def seeds_of(prefix: str, result_file: str = "eval.json") -> list[int]:
    """Every seed of a run (name without _s<seed>) whose evaluation is in results/: tables use all
    the seeds that exist, not only the plan's first ones."""
    if not os.path.isdir(RESULTS):
        return []
    found = (re.fullmatch(re.escape(prefix) + r"_s(\d+)", entry) for entry in os.listdir(RESULTS))
    return sorted(int(m.group(1)) for m in found
                  if m and os.path.exists(os.path.join(RESULTS, m.group(0), result_file)))


def table(rows: list[tuple[str, str]], columns: tuple[str, ...], result_file: str = "eval.json") -> str:
    """rows: (label, run name without the _s<seed> suffix); the runs' evaluations at temperature 1,
    over every seed that has one."""
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, prefix in rows:
        results = [r for r in (load(f"{prefix}_s{seed}", result_file) for seed in seeds_of(prefix, result_file)) if r]
        if not results:
            continue
        cells = [mean_se([r.get(c) for r in results]) for c in columns]
        lines.append(f"| {label} ({len(results)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else NOT_KEPT


def curve(prefixes: list[tuple[str, str]], key: str = "curve") -> str:
    """Accuracy (or val nll) over iterations, mean over seeds, as a text table, at the iterations
    every run logged."""
    rows = []
    for label, prefix in prefixes:
        results = [r for r in (load(f"{prefix}_s{seed}") for seed in seeds_of(prefix)) if r]
        if results:
            rows.append((label, results))
    if not rows:
        return NOT_KEPT
    iters = sorted(set.intersection(*(set(r[key]) for _, results in rows for r in results)))
    lines = ["| iter | " + " | ".join(str(i) for i in iters) + " |", "|---" * (len(iters) + 1) + "|"]
    for label, results in rows:
        cells = [mean_se([r[key][i] for r in results]).split(" ")[0] for i in iters]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def minutes(seconds) -> str:
    return seconds if isinstance(seconds, str) else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def quickstart_table() -> str:
    """The README quick start's table: its two commands' last log line (greedy accuracy on 200 val
    problems, val nll), training wall time, and their `sample.py --eval` (beam 4, Self-BLEU)."""
    commands = [("quickstart_lam0.5", "python train.py --lambda 0.5"),
                ("quickstart_lam0", "python train.py --lambda 0 --out_dir out_mle")]
    lines = ["| command | greedy accuracy | val nll | time | beam-4 accuracy | Self-BLEU |", "|---|---|---|---|---|---|"]
    for name, command in commands:
        row = load(name)
        if row is None:
            continue
        with open(os.path.join(RESULTS, name, "log.jsonl")) as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
        path = os.path.join(RESULTS, name, "run.json")
        facts = json.load(open(path)) if os.path.exists(path) else {}
        lines.append(f"| `{command}` | {last['accuracy']:.3f} | {last['val_nll']:.3f} | "
                     f"{minutes(facts.get('train_seconds', UNKNOWN))} | {row['accuracy_beam']:.3f} | {row['self_bleu']:.3f} |")
    machine_line = ""
    if os.path.exists(os.path.join(RESULTS, "quickstart_lam0", "run.json")):
        facts = json.load(open(os.path.join(RESULTS, "quickstart_lam0", "run.json")))
        machine_line = (f"\n\nMachine: {facts['cpu']}, {facts['threads']} thread(s), torch {facts['torch']}, "
                        f"commit {str(facts['commit'])[:7]}.")
    return "### Quick start\n\n" + "\n".join(lines) + machine_line


def report() -> None:
    sweep = [(f"λ = {lam_name(lam)}", f"sweep_lam{lam_name(lam)}") for lam in LAMBDAS]
    print("### 1. λ sweep from scratch\n")
    print(table(sweep, METRICS + ("val_td", "val_entropy")))
    print("\nGreedy accuracy over training (val, 200 problems):\n")
    print(curve(sweep))
    print("\n### 2. The paper's protocol: MLE, then fine-tuning\n")
    print(table([("MLE, then MLE", "finetune_lam0"), ("MLE, then IQLearn λ = 0.01", "finetune_lam0.01"),
                 ("MLE, then IQLearn λ = 0.1", "finetune_lam0.1"), ("MLE, then IQLearn λ = 0.5", "finetune_lam0.5")],
                METRICS + ("val_td",)))
    print("\n### 3. Remedies for the from-scratch gap\n")
    print(table([("MLE", "sweep_lam0"), ("λ = 0.5", "sweep_lam0.5"), ("λ = 0.1", "sweep_lam0.1"),
                 ("λ = 0.1, γ = 0.9", "gamma0.9_lam0.1")], METRICS + ("val_td",)))
    print("\n### 4. Beam dependence\n")
    print(table([("MLE", "sweep_lam0"), ("IQLearn λ = 0.01", "sweep_lam0.01"), ("IQLearn λ = 0.1", "sweep_lam0.1"),
                 ("IQLearn λ = 0.5", "sweep_lam0.5")],
                ("accuracy_greedy", "accuracy_sample", "accuracy_beam", "beam_minus_greedy", "beam_minus_sample")))
    print("\n### 5. Small data (500 training problems)\n")
    small = [("MLE", "small_mle"), ("MLE + entropy 0.01", "small_entropy"), ("IQLearn λ = 0.5", "small_lam0.5")]
    print(table(small, METRICS))
    print("\nVal nll over training:\n")
    print(curve(small, "nll_curve"))
    print("\nGreedy accuracy over training:\n")
    print(curve(small))
    print("\n### Online IQLearn (α = 0.1, samples every 4 iterations)\n")
    print(table([("offline λ = 0.5", "sweep_lam0.5"), ("online λ = 0.5, α = 0.1", "online_mix0.1"),
                 ("offline λ = 0.1, γ = 0.9", "gamma0.9_lam0.1"),
                 ("online λ = 0.1, γ = 0.9, α = 0.1", "online_gamma0.9_lam0.1")],
                ("accuracy_greedy", "accuracy_sample", "self_bleu", "self_bleu_correct", "update_ms", "sample_ms")))


# ----------------------------------------------------------------------------------------------
# The accuracy-diversity frontier: each method's sampled accuracy against its Self-BLEU as the
# sampling temperature moves, and the verdict at matched Self-BLEU.

FRONTIER_METHODS = [  # (label, run name without _s<seed>, its colour in every figure)
    ("MLE", "sweep_lam0", "black"),
    *[(f"MLE + entropy {c:g}", f"entropy{c:g}", colour)
      for c, colour in zip(ENTROPY_COEFS, ("#9ecae1", "#4292c6", "#08519c"))],
    ("IQLearn λ = 0.01", "sweep_lam0.01", "#74c476"),
    ("IQLearn λ = 0.1", "sweep_lam0.1", "#41ab5d"),
    ("IQLearn λ = 0.5", "sweep_lam0.5", "#8c6d31"),
    ("IQLearn λ = 0.1, γ = 0.9 (recipe)", "gamma0.9_lam0.1", "#d62728"),
    ("λ = 0.1 + value head", "head_lam0.1", "#fdae6b"),
    ("λ = 0.5 + value head", "head_lam0.5", "#e6550d"),
    ("recipe + value head", "head_gamma0.9_lam0.1", "#9467bd"),
]
MATCHED_SELF_BLEU = (0.65, 0.7, 0.75, 0.8)   # levels at which methods are compared (MLE's range)
# Paired comparisons at matched Self-BLEU beyond "method − MLE": (label, method, baseline).
MATCHED_EXTRA = [("MLE + entropy 0.1 − recipe", "entropy0.1", "gamma0.9_lam0.1"),
                 ("recipe + value head − recipe", "head_gamma0.9_lam0.1", "gamma0.9_lam0.1")]


def frontier_curves(prefix: str) -> dict[int, list[dict]]:
    """seed -> that run's rows, one per temperature, for every seed evaluated so far."""
    found = {seed: evaluations(f"{prefix}_s{seed}", "frontier.json") for seed in seeds_of(prefix, "frontier.json")}
    return {seed: sorted(rows, key=lambda r: r["temperature"]) for seed, rows in found.items() if rows}


def accuracy_at(rows: list[dict], level: float) -> float | None:
    """Sampled accuracy at Self-BLEU `level`, linearly interpolated between the temperatures that
    bracket it (None outside the curve: no extrapolation)."""
    points = sorted((r["self_bleu"], r["accuracy_sample"]) for r in rows)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= level <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return None


def paired_difference(curves: dict[int, list[dict]], baseline: dict[int, list[dict]], level: float
                      ) -> list[float]:
    """Per seed that both have and whose curves both reach `level`: accuracy minus the baseline's."""
    pairs = [(accuracy_at(curves[s], level), accuracy_at(baseline[s], level)) for s in curves if s in baseline]
    return [a - b for a, b in pairs if a is not None and b is not None]


def matched_row(label: str, prefix: str, baseline: str) -> str:
    curves, base = frontier_curves(prefix), frontier_curves(baseline)
    cells = [interval_text(d) if (d := paired_difference(curves, base, level)) else "no overlap"
             for level in MATCHED_SELF_BLEU]
    return f"| {label} | " + " | ".join(cells) + " |"


def frontier_tables(methods: list[tuple[str, str, str]] = FRONTIER_METHODS, baseline: str = "sweep_lam0",
                    extra: list[tuple[str, str, str]] = MATCHED_EXTRA) -> str:
    """Sampled accuracy and Self-BLEU per temperature of each method (label, run name, colour), and
    the verdict at matched Self-BLEU: each method − baseline, and the `extra` pairs."""
    temperatures = [float(t) for t in TEMPERATURES.split(",")]
    header = " | ".join(f"T = {t:g}" for t in temperatures)
    acc = ["| method | " + header + " |", "|---" * (len(temperatures) + 1) + "|"]
    bleu = list(acc)
    levels = " | ".join(f"Self-BLEU {x:g}" for x in MATCHED_SELF_BLEU)
    verdict = [f"| method − {next(label for label, p, _ in methods if p == baseline)}, same seed | " + levels + " |",
               "|---" * (len(MATCHED_SELF_BLEU) + 1) + "|"]
    for label, prefix, _ in methods:
        curves = frontier_curves(prefix)
        if not curves:
            continue
        at = lambda key, t: mean_se([r[key] for rows in curves.values() for r in rows if r["temperature"] == t])
        name = f"{label} ({len(curves)} seeds)"
        acc.append(f"| {name} | " + " | ".join(at("accuracy_sample", t) for t in temperatures) + " |")
        bleu.append(f"| {name} | " + " | ".join(at("self_bleu", t) for t in temperatures) + " |")
        if prefix != baseline:
            verdict.append(matched_row(label, prefix, baseline))
    between = ["| paired difference | " + levels + " |", verdict[1]]
    between += [matched_row(*row) for row in extra if frontier_curves(row[1]) and frontier_curves(row[2])]
    return ("Sampled accuracy:\n\n" + "\n".join(acc) + "\n\nSelf-BLEU (lower = more diverse):\n\n"
            + "\n".join(bleu) + "\n\nSampled accuracy at matched Self-BLEU, paired difference to MLE of the same "
            "seed: mean ± s.e. [95% t interval] over the n seeds whose curves both reach the level, and what "
            "the interval says of the claim \"the method is more accurate than MLE\" (the rule below):\n\n"
            + "\n".join(verdict) + "\n\nThe same between two methods (claim: the first is more accurate):\n\n"
            + "\n".join(between) + "\n\nThe rule: " + CLAIM_RULE)


CLAIM_SIGN = {"self_bleu": -1, "self_bleu_correct": -1, "nll": -1}   # lower is better: the claim is < 0


def paired_table(rows: list[tuple[str, str, str]], columns: tuple[str, ...], result_file: str = "eval.json") -> str:
    """rows: (label, run, baseline run), names without _s<seed>. Each cell: the per-seed difference
    run − baseline at temperature 1 over the seeds both have, mean ± s.e. [95% t interval] and what
    it says of the claim that the difference is positive (negative for Self-BLEU and nll, where
    lower is the claimed improvement: more diverse, more likely)."""
    header = [f"{c} (claim {'< 0' if CLAIM_SIGN.get(c, 1) < 0 else '> 0'})" for c in columns]
    lines = ["| paired difference | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, prefix, baseline in rows:
        seeds = sorted(set(seeds_of(prefix, result_file)) & set(seeds_of(baseline, result_file)))
        if not seeds:
            continue
        pairs = [(load(f"{prefix}_s{s}", result_file), load(f"{baseline}_s{s}", result_file)) for s in seeds]
        cells = [interval_text([a[c] - b[c] for a, b in pairs if a.get(c) is not None and b.get(c) is not None],
                               CLAIM_SIGN.get(c, 1)) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_closed(head: str, without: str, mle: str, metric: str) -> list[float]:
    """Per seed: the share of the gap from fine-tuning without the head to MLE-then-MLE that the
    head closes, (head − without) / (mle − without), in `metric` at temperature 1."""
    shares = []
    for s in sorted(set(seeds_of(head)) & set(seeds_of(without)) & set(seeds_of(mle))):
        h, w, m = (load(f"{p}_s{s}")[metric] for p in (head, without, mle))
        if m != w:
            shares.append((h - w) / (m - w))
    return shares


def plot_figures(folder: str = "figures") -> list[str]:
    """figures/frontier.png (accuracy against Self-BLEU through the temperatures, error bars over
    seeds), figures/frontier_difference.png (the verdict: method − MLE at matched Self-BLEU, one dot
    per seed, the mean and its 95% t interval) and figures/lambda_curves.png (greedy accuracy and
    val nll over training)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("experiments.py: error: --plot needs matplotlib (pip install matplotlib)")
    os.makedirs(folder, exist_ok=True)
    methods = {prefix: (label, colour) for label, prefix, colour in FRONTIER_METHODS}
    found = {prefix: frontier_curves(prefix) for prefix in methods}
    panels = [("MLE, its entropy cost, and the recipe", ["sweep_lam0", "entropy0.01", "entropy0.03", "entropy0.1",
                                                         "gamma0.9_lam0.1"]),
              ("IQLearn: λ, γ and the value head", ["sweep_lam0", "sweep_lam0.01", "sweep_lam0.1", "sweep_lam0.5",
                                                    "gamma0.9_lam0.1", "head_gamma0.9_lam0.1", "head_lam0.1",
                                                    "head_lam0.5"])]
    panels = [(title, [p for p in prefixes if found[p]]) for title, prefixes in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 6.2), sharey=True, squeeze=False)
    for ax, (title, prefixes) in zip(axes[0], panels):
        for prefix in prefixes:
            (label, colour), curves = methods[prefix], found[prefix]
            temps = sorted({r["temperature"] for rows in curves.values() for r in rows})
            stats = [[mean_and_se([r[k] for rows in curves.values() for r in rows if r["temperature"] == t])
                      for k in ("self_bleu", "accuracy_sample")] for t in temps]
            (x, xe), (y, ye) = zip(*[s[0] for s in stats]), zip(*[s[1] for s in stats])
            ax.errorbar(x, y, xerr=xe, yerr=ye, marker="o", markersize=4, capsize=2, color=colour,
                        lw=2.2 if prefix in ("sweep_lam0", "gamma0.9_lam0.1") else 1.3,
                        label=f"{label} ({len(curves)} seeds)")
            if prefix == "sweep_lam0":
                for xi, yi, t in zip(x, y, temps):
                    ax.annotate(f"T={t:g}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set(xlabel="Self-BLEU among a problem's 5 samples (lower = more diverse)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("sampled accuracy (300 val problems)")
    grid = TEMPERATURES.split(",")
    fig.suptitle(f"Accuracy–diversity frontier: one point per sampling temperature ({grid[0]} → {grid[-1]}, "
                 "left to right)", fontsize=11)
    fig.text(0.5, 0.01, "Points: mean over seeds at one temperature. Bars: ±1 standard error over seeds of that mean "
             "(unpaired), in both accuracy and Self-BLEU. The verdict (paired, at matched Self-BLEU) is in "
             "frontier_difference.png.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths = [os.path.join(folder, name) for name in ("frontier.png", "frontier_difference.png", "lambda_curves.png")]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    compared = [p for p in ("gamma0.9_lam0.1", "sweep_lam0.01", "sweep_lam0.1", "entropy0.1", "head_gamma0.9_lam0.1",
                            "head_lam0.1", "head_lam0.5", "sweep_lam0.5") if found[p]]
    fig, ax = plt.subplots(figsize=(12.5, 5.8))
    width = 0.03 / max(1, len(compared) - 1)
    shown, bars = [0.0], []   # the y range: every seed's dot and every interval of 3 or more seeds
    for i, prefix in enumerate(compared):
        (label, colour), n_seeds = methods[prefix], 0
        for level in MATCHED_SELF_BLEU:
            x = level + 0.015 - i * width
            diffs = paired_difference(found[prefix], found["sweep_lam0"], level)
            n_seeds = max(n_seeds, len(diffs))
            ax.scatter([x] * len(diffs), diffs, s=12, color=colour, alpha=0.55, lw=0)
            shown += diffs
            interval = t_interval(diffs)
            if interval:
                m, _, low, high = interval
                ax.errorbar([x], [m], yerr=[[m - low], [high - m]], fmt="D", markersize=5, color=colour, capsize=3,
                            lw=1.5)
                bars.append((x, low, high, colour))
                if len(diffs) >= 3:
                    shown += [low, high]
        ax.plot([], [], "D", color=colour, label=f"{label} (≤ {n_seeds} seeds)")
    bottom, top = min(shown) - 0.02, max(shown) + 0.02
    ax.set_ylim(bottom, top)
    for x, low, high, colour in bars:   # an interval of 2 seeds (1 df) may run off the plot: say where to
        for end, edge, va in ((low, bottom, "bottom"), (high, top, "top")):
            if (end < edge) if va == "bottom" else (end > edge):
                ax.annotate(f"{end:+.2f}", (x, edge), textcoords="offset points", xytext=(0, 2 if va == "bottom" else -2),
                            ha="center", va=va, fontsize=8, fontweight="bold", color=colour)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(MATCHED_SELF_BLEU, [f"{x:g}" for x in MATCHED_SELF_BLEU])
    ax.invert_xaxis()
    ax.set(xlabel="Self-BLEU level (lower = more diverse)",
           ylabel="sampled accuracy: method − MLE of the same seed")
    ax.set_title("The verdict: accuracy at matched Self-BLEU, method − MLE (paired by seed)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.text(0.5, 0.01, "Dots: one seed. Diamonds and bars: the mean over seeds and its 95% interval (Student's t, "
             "n − 1 df; n = 2 gives a very wide one: a number marks where\nan interval runs off the plot). "
             "A level a seed's curve does not reach is left out.",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for prefix in ("sweep_lam0", "sweep_lam0.01", "sweep_lam0.1", "sweep_lam0.5", "gamma0.9_lam0.1"):
        (label, colour), logs = methods[prefix], [rows[0] for rows in found[prefix].values()]
        if not logs:
            continue
        iters = sorted(set.intersection(*(set(r["curve"]) for r in logs)))
        for ax, key in ((acc_ax, "curve"), (nll_ax, "nll_curve")):
            m, se = zip(*[mean_and_se([r[key][i] for r in logs]) for i in iters])
            ax.errorbar(iters, m, yerr=se, marker="o", capsize=2, color=colour, label=f"{label} ({len(logs)} seeds)")
    acc_ax.set(xlabel="iteration", ylabel="greedy accuracy (200 val problems)", title="Greedy accuracy over training")
    nll_ax.set(xlabel="iteration", ylabel="val nll per token", title="Validation nll over training", yscale="log")
    for ax in (acc_ax, nll_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.text(0.5, 0.01, "Bars: ±1 standard error over seeds.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths


def report_frontier() -> None:
    print("### Frontier: accuracy against diversity across sampling temperatures\n")
    print(frontier_tables())
    print("\n### From scratch at temperature 1 (300 val problems; every seed that exists)\n")
    scratch = [("MLE", "sweep_lam0"), ("λ = 0.01", "sweep_lam0.01"), ("λ = 0.1", "sweep_lam0.1"),
               ("λ = 0.1 + head", "head_lam0.1"), ("λ = 0.5", "sweep_lam0.5"), ("λ = 0.5 + head", "head_lam0.5"),
               ("λ = 0.1, γ = 0.9", "gamma0.9_lam0.1"), ("λ = 0.1, γ = 0.9 + head", "head_gamma0.9_lam0.1"),
               *[(f"MLE + entropy {c:g}", f"entropy{c:g}") for c in ENTROPY_COEFS]]
    print(table(scratch, METRICS + ("val_td", "reward_mean"), result_file="frontier.json"))
    print("\nPaired by seed, at temperature 1:\n")
    print(paired_table([(f"{label} − MLE", prefix, "sweep_lam0") for label, prefix in scratch[1:]]
                       + [("λ = 0.1, γ = 0.9 + head − λ = 0.1, γ = 0.9", "head_gamma0.9_lam0.1", "gamma0.9_lam0.1"),
                          ("λ = 0.1, γ = 0.9 − λ = 0.1", "gamma0.9_lam0.1", "sweep_lam0.1")],
                       ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "self_bleu_correct", "nll"),
                       result_file="frontier.json"))
    print("\n### Value head, the protocol: MLE, then 400 iterations of fine-tuning\n")
    print(table([("MLE, then MLE", "finetune_lam0"), ("then λ = 0.1", "finetune_lam0.1"),
                 ("then λ = 0.1 + head", "finetune_head_lam0.1"), ("then λ = 0.5", "finetune_lam0.5"),
                 ("then λ = 0.5 + head", "finetune_head_lam0.5")], METRICS + ("val_td", "reward_mean")))
    print("\nPaired by seed:\n")
    print(paired_table([("then λ = 0.5 + head − then λ = 0.5", "finetune_head_lam0.5", "finetune_lam0.5"),
                        ("then λ = 0.5 + head − MLE, then MLE", "finetune_head_lam0.5", "finetune_lam0"),
                        ("then λ = 0.5 − MLE, then MLE", "finetune_lam0.5", "finetune_lam0"),
                        ("then λ = 0.1 + head − then λ = 0.1", "finetune_head_lam0.1", "finetune_lam0.1")],
                       ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll")))
    print("\nShare of the gap (then λ = 0.5 → MLE, then MLE) that the head closes, per seed "
          "(head − without) / (MLE − without):\n")
    for metric in ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "nll"):
        shares = gap_closed("finetune_head_lam0.5", "finetune_lam0.5", "finetune_lam0", metric)
        print(f"- {metric}: {interval_text(shares, word=False) if shares else 'n/a'}")
    print("\n### Rewards: pooled and within-problem correlation of R with correctness (temperature 1)\n")
    rewards = [("MLE (γ = 1)", "sweep_lam0"), ("λ = 0.01 (γ = 1)", "sweep_lam0.01"), ("λ = 0.1 (γ = 1)", "sweep_lam0.1"),
               ("λ = 0.5 (γ = 1)", "sweep_lam0.5"), ("λ = 0.1, γ = 0.9", "gamma0.9_lam0.1"),
               ("λ = 0.1, γ = 0.9 + head", "head_gamma0.9_lam0.1"), ("λ = 0.5 + head (γ = 1)", "head_lam0.5")]
    columns = ("reward_spearman", "reward_spearman_within", "reward_within_problems")
    print(table(rewards, columns, result_file="frontier.json"))
    print("\nPaired by seed:\n")
    print(paired_table([(f"{label} − MLE", prefix, "sweep_lam0") for label, prefix in rewards[1:]],
                       columns[:2], result_file="frontier.json"))


# ----------------------------------------------------------------------------------------------
# GAIL against IQLearn in the fine-tuning protocol: accuracy, the shuffled-reward controls, the
# frontier, and stability (how far each run falls below the MLE model it started from).

GAIL_ROWS = [  # (label, run name without _s<seed>, its colour in the stability figure)
    ("MLE, then MLE", "finetune_lam0", "black"),
    ("MLE, then IQLearn λ = 0.5 + head", "finetune_head_lam0.5", "#e6550d"),
    ("MLE, then the recipe + head", "finetune_head_gamma0.9_lam0.1", "#d62728"),
    ("MLE, then GAIL", "gail_mle1", "#3182bd"),
    ("GAIL, shuffled rewards", "gail_shuffled_mle1", "#9ecae1"),
    ("GAIL without the MLE loss", "gail_mle0", "#756bb1"),
    ("the same, shuffled rewards", "gail_shuffled_mle0", "#bcbddc"),
]
FALL = 0.10   # a run is unstable if its greedy accuracy falls this far below its MLE base's
# The paired comparisons: (label, first, second), names without _s<seed>.
GAIL_PAIRED = [("GAIL − MLE, then MLE", "gail_mle1", "finetune_lam0"),
               ("GAIL − the recipe + head", "gail_mle1", "finetune_head_gamma0.9_lam0.1"),
               ("GAIL − IQLearn λ = 0.5 + head", "gail_mle1", "finetune_head_lam0.5"),
               ("GAIL − its shuffled control", "gail_mle1", "gail_shuffled_mle1"),
               ("GAIL without MLE − its shuffled control", "gail_mle0", "gail_shuffled_mle0")]
STABILITY_PAIRS = [("the recipe + head vs GAIL", "finetune_head_gamma0.9_lam0.1", "gail_mle1"),
                   ("IQLearn λ = 0.5 + head vs GAIL", "finetune_head_lam0.5", "gail_mle1"),
                   ("the recipe + head vs GAIL without the MLE loss", "finetune_head_gamma0.9_lam0.1", "gail_mle0"),
                   ("GAIL vs GAIL without the MLE loss", "gail_mle1", "gail_mle0"),
                   ("its shuffled control vs GAIL (does the discriminator destabilise it?)", "gail_shuffled_mle1",
                    "gail_mle1"),
                   ("MLE, then MLE vs GAIL", "finetune_lam0", "gail_mle1")]
GAIL_MATCHED = [("GAIL − the recipe + head", "gail_mle1", "finetune_head_gamma0.9_lam0.1"),
                ("GAIL − IQLearn λ = 0.5 + head", "gail_mle1", "finetune_head_lam0.5")]


def log_of(name: str) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(RESULTS, name, "log.jsonl")) if line.strip()]


def base_accuracy(seed: int) -> float:
    """Greedy accuracy (200 val problems) of the MLE model the protocol's runs of this seed start
    from: the last evaluation of its from-scratch run."""
    return log_of(f"sweep_lam0_s{seed}")[-1]["accuracy"]


def largest_fall(name: str, seed: int) -> float:
    """How far the run's greedy accuracy fell below its MLE base at its worst evaluation (negative:
    it stayed above the base at every evaluation)."""
    return base_accuracy(seed) - min(e["accuracy"] for e in log_of(name))


def gail_report() -> str:
    with_base = lambda prefix: [s for s in seeds_of(prefix)
                                if os.path.exists(os.path.join(RESULTS, f"sweep_lam0_s{s}", "log.jsonl"))]
    rows = [(label, prefix) for label, prefix, _ in GAIL_ROWS]
    text = ["At temperature 1 (200 val problems, 5 samples each):\n",
            table(rows, ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll")),
            "\nPaired by seed (does the discriminator matter, and does GAIL beat the others):\n",
            paired_table(GAIL_PAIRED, ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll")),
            "\nThe discriminator's accuracy on expert vs policy tokens over training (0.5 = chance), mean over seeds:\n"]
    gail_runs = [(label, prefix) for label, prefix, _ in GAIL_ROWS if prefix.startswith("gail")]
    iters = sorted({e["iter"] for _, p in gail_runs for s in seeds_of(p) for e in log_of(f"{p}_s{s}")})
    lines = ["| run | " + " | ".join(f"iter {i}" for i in iters) + " |", "|---" * (len(iters) + 1) + "|"]
    for label, prefix in gail_runs:
        logs = [{e["iter"]: e["disc_accuracy"] for e in log_of(f"{prefix}_s{s}")} for s in seeds_of(prefix)]
        if logs:
            lines.append(f"| {label} ({len(logs)} seeds) | "
                         + " | ".join(mean_se([log.get(i) for log in logs]) for i in iters) + " |")
    text += ["\n".join(lines), f"\nStability: the largest fall of greedy accuracy below the run's MLE base "
             f"(200 val problems, at any of its evaluations), per seed, and the runs that fell more than {FALL:.2f}:\n",
             "| run | largest fall, per seed | mean ± s.e. | runs that fell > " + f"{FALL:.2f} |", "|---|---|---|---|"]
    for label, prefix in rows:
        falls = {s: largest_fall(f"{prefix}_s{s}", s) for s in with_base(prefix)}
        if falls:
            text.append(f"| {label} | " + ", ".join(f"s{s}: {signed(f)}" for s, f in falls.items())
                        + f" | {mean_se(list(falls.values()))} | {sum(f > FALL for f in falls.values())} of {len(falls)} |")
    text += ["\nPaired by seed, the claim that the first is the stabler (its largest fall is smaller):\n"]
    for label, stable, other in STABILITY_PAIRS:
        seeds = sorted(set(with_base(stable)) & set(with_base(other)))
        if seeds:
            text.append(f"- {label}: " + interval_text([largest_fall(f"{stable}_s{s}", s) - largest_fall(f"{other}_s{s}", s)
                                                        for s in seeds], sign=-1))
    frontier = [row for row in GAIL_ROWS if row[1] in GAIL_FRONTIER]
    return "\n".join(text) + ("\n\nThe frontier (300 val problems at temperatures " + TEMPERATURES + "). "
                              + frontier_tables(frontier, "finetune_lam0", GAIL_MATCHED))


def plot_gail(folder: str = "figures") -> str:
    """figures/gail_stability.png: each method's greedy accuracy over fine-tuning, one line per seed,
    from its MLE base (iteration 0), with the line FALL below the base; and the discriminator's accuracy."""
    import matplotlib.pyplot as plt
    shown = [(label, prefix, colour) for label, prefix, colour in GAIL_ROWS if seeds_of(prefix)]
    columns = math.ceil((len(shown) + 1) / 2)
    fig, grid = plt.subplots(2, columns, figsize=(3.6 * columns, 7.6), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(shown) + 1:]:
        ax.set_visible(False)
    styles = {1: "-", 2: "--", 3: ":", 4: "-."}
    for ax, (label, prefix, colour) in zip(axes, shown):
        falls = 0
        for s in seeds_of(prefix):
            log = log_of(f"{prefix}_s{s}")
            base = base_accuracy(s)
            ax.plot([0] + [e["iter"] for e in log], [base] + [e["accuracy"] for e in log], styles.get(s, "-"),
                    marker="o", markersize=3, color=colour, label=f"seed {s}")
            ax.axhline(base - FALL, color=colour, lw=0.6, ls=styles.get(s, "-"), alpha=0.5)
            falls += largest_fall(f"{prefix}_s{s}", s) > FALL
        ax.set_title(f"{label}\n{falls} of {len(seeds_of(prefix))} fell > {FALL * 100:.0f} points", fontsize=9)
        ax.set_xlabel("fine-tuning iteration (0 = MLE base)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    low = min(ax.get_ylim()[0] for ax in axes[:len(shown)])
    high = max(ax.get_ylim()[1] for ax in axes[:len(shown)])
    for ax in axes[:len(shown)]:   # one scale for every method; the discriminator has its own
        ax.set_ylim(low, high)
    for row in grid:
        row[0].set_ylabel("greedy accuracy (200 val problems)")
    disc = axes[len(shown)]
    for label, prefix, colour in shown:
        if prefix.startswith("gail"):
            for s in seeds_of(prefix):
                log = log_of(f"{prefix}_s{s}")
                disc.plot([e["iter"] for e in log], [e["disc_accuracy"] for e in log], styles.get(s, "-"), marker="o",
                          markersize=3, color=colour, label=label if s == seeds_of(prefix)[0] else None)
    disc.axhline(0.5, color="black", lw=0.8)
    disc.set_title("GAIL's discriminator:\naccuracy on expert vs policy tokens", fontsize=9)
    disc.set_xlabel("fine-tuning iteration")
    disc.set_ylabel("balanced accuracy (0.5 = chance)")
    disc.grid(alpha=0.3)
    disc.legend(fontsize=7, loc="center right")
    fig.text(0.5, 0.01, f"Thin horizontal lines: each seed's MLE base minus {FALL * 100:.0f} points (the instability "
             "threshold). The discriminator's accuracy is measured on each batch before it trains on it.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = os.path.join(folder, "gail_stability.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# The reason for the null, measured: is the recipe's policy an MLE policy at another temperature?
# On the val expert responses' action positions, the mean per-token KL(π_method ‖ softmax(z_MLE / T))
# minimised over a grid of T, against the same quantity between two MLE seeds (the noise floor).

NULL_REASON = [("MLE", "sweep_lam0"), ("recipe (λ = 0.1, γ = 0.9)", "gamma0.9_lam0.1"), ("λ = 0.5 (γ = 1)", "sweep_lam0.5")]
NULL_REASON_SEEDS = (1, 2, 3)
KL_TEMPERATURES = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))   # 0.5, 0.55, ..., 3.0
TIMING_KEYS = ("update_ms", "sample_ms")   # a log's wall-clock fields: they differ on every rerun


def same_log(name: str) -> dict:
    """Does runs/<name>/log.jsonl (retrained) reproduce the kept results/<name>/log.jsonl: every
    number the kept log has, timings aside? (A key logged only since it was kept is not compared.)"""
    read = lambda path: [json.loads(line) for line in open(path) if line.strip()]
    new, kept = read(os.path.join(RUNS, name, "log.jsonl")), read(os.path.join(RESULTS, name, "log.jsonl"))
    compared = lambda e, keys: {k: e.get(k) for k in keys if k not in TIMING_KEYS}
    check = {"name": name, "log_equal": len(new) == len(kept)
             and all(compared(e, was) == compared(was, was) for e, was in zip(new, kept))}
    if not check["log_equal"]:
        check["kept_last"] = {k: kept[-1].get(k) for k in ("iter", "val_nll", "accuracy")}
        check["retrained_last"] = {k: new[-1].get(k) for k in ("iter", "val_nll", "accuracy")}
    return check


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
    from model import GPT, GPTConfig
    checkpoint = torch.load(os.path.join(RUNS, name, "ckpt.pt"), map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
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
    torch.set_num_threads(int(ONE_THREAD["OMP_NUM_THREADS"]))
    logits, fixed = {}, set()
    for _, prefix in NULL_REASON:
        for s in seeds:
            logits[prefix, s], key = response_logits(f"{prefix}_s{s}")
            fixed.add(key)
    if len(fixed) != 1:
        raise SystemExit("experiments.py: error: the checkpoints differ in vocabulary or data; positions do not match")
    pairs = []
    for i, s in enumerate(seeds):
        for reference in (seeds[(i + 1) % len(seeds)], s):
            for label, prefix in NULL_REASON:
                if prefix == "sweep_lam0" and reference == s:
                    continue  # a model against itself
                kl = tempered_kl(logits[prefix, s], logits["sweep_lam0", reference])
                best = min(range(len(kl)), key=kl.__getitem__)
                pairs.append({"policy": label, "run": f"{prefix}_s{s}", "reference": f"sweep_lam0_s{reference}",
                              "same_seed": reference == s, "kl_at_T1": kl[KL_TEMPERATURES.index(1.0)],
                              "kl_min": kl[best], "best_T": KL_TEMPERATURES[best], "kl_by_T": kl})
    return {"seeds": seeds, "temperatures": list(KL_TEMPERATURES), "positions": len(logits["sweep_lam0", seeds[0]]),
            "pairs": pairs}


def measure_null_reason(all_runs: dict[str, list[str]]) -> None:
    """Train (with the plan's exact flags) the checkpoints the measurement needs, seed by seed, check
    each retrained log against the kept one, and write results/null_reason/ after every seed from
    the second on, so that an interrupted measurement keeps what it has."""
    kept = os.path.join(RESULTS, "null_reason")
    os.makedirs(kept, exist_ok=True)
    began, trainings, checks = time.time(), [], []
    for k, seed in enumerate(NULL_REASON_SEEDS, start=1):
        for _, prefix in NULL_REASON:
            name = f"{prefix}_s{seed}"
            if not os.path.exists(os.path.join(RUNS, name, "ckpt.pt")) or not os.path.exists(
                    os.path.join(RUNS, name, "log.jsonl")):
                trainings.append({"name": name, **train_run(name, all_runs[name], all_runs)})
            else:
                trainings.append({"name": name, "train_command": "already in runs/", "train_seconds": 0})
            checks.append(same_log(name))
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
    path = os.path.join(RESULTS, "null_reason", "kl.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        found = json.load(f)
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
    checks = found.get("log_checks", [])
    differ = [c["name"] for c in checks if not c["log_equal"]]
    lines += ["", f"Retrained checkpoints (runs/ is not kept): {len(checks) - len(differ)} of {len(checks)} logs "
              "equal the kept results/<name>/log.jsonl (timings aside)"
              + (f"; differ: {', '.join(differ)}" if differ else "") + "."]
    for c in checks:
        if not c["log_equal"]:
            lines.append(f"- {c['name']}: kept last {c['kept_last']}, retrained last {c['retrained_last']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated groups: " + ", ".join([*plan(), "null_reason"]))
    parser.add_argument("--report", action="store_true", help="print the tables only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side")
    parser.add_argument("--plot", action="store_true", help="also draw figures/*.png (needs matplotlib)")
    parser.add_argument("--provenance", metavar="NAME", help="print results/NAME/run.json: how, where, which code")
    parser.add_argument("--backfill", action="store_true",
                        help="write run.json for results/ folders without one (unrecoverable facts: unknown)")
    args = parser.parse_args()
    if args.provenance:
        print(provenance(args.provenance))
        return
    if args.backfill:
        print("\n".join(f"wrote {RESULTS}/{name}/run.json" for name in backfill_provenance()))
        return
    groups = plan()
    chosen = args.only.split(",") if args.only else [*groups, "null_reason"]
    for group in chosen:
        if group not in groups and group != "null_reason":
            parser.error(f"unknown group {group}")
    if not args.report:
        os.makedirs(RUNS, exist_ok=True)
        all_runs = {name: flags for runs in groups.values() for name, flags in runs}
        for group in chosen:  # in order: the protocol group starts from the sweep's MLE runs
            if group == "null_reason":
                measure_null_reason(all_runs)
                continue
            eval_flags, result_file = {"frontier": (FRONTIER_EVAL, "frontier.json"),
                                       "gail_frontier": (FRONTIER_EVAL, "frontier.json"),
                                       "quickstart": (QUICKSTART_EVAL, "eval.json")}.get(group, (EVAL, "eval.json"))
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(lambda job: train_and_evaluate(*job, eval_flags, result_file, all_runs), groups[group]))
    if "quickstart" in chosen:
        print(quickstart_table() + "\n")
    if set(chosen) - {"frontier", "value_head", "quickstart", "null_reason", "gail", "gail_frontier", "gail_controls"}:
        report()
    if set(chosen) & {"frontier", "value_head"}:
        report_frontier()
    if "null_reason" in chosen:
        print(null_reason_report())
    if set(chosen) & {"gail", "gail_frontier", "gail_controls"}:
        print("### GAIL against IQLearn: MLE, then 400 iterations of fine-tuning\n\n" + gail_report())
    if args.plot:
        print("\n".join(f"wrote {path}" for path in [*plot_figures(), plot_gail()]))


if __name__ == "__main__":
    main()
