"""Rerun the README's Results: every experiment with train.py and `sample.py --eval`, then print
the tables (markdown) from what the runs left behind.

    python experiments.py                  # everything, 3 seeds (about an hour on 2 CPU cores)
    python experiments.py --only sweep     # one group; finished runs are skipped, so it resumes
    python experiments.py --report         # only print the tables of the runs that exist

Each run is `python train.py <flags> --out_dir runs/<name>` followed by
`python sample.py --out_dir runs/<name> --eval --json > runs/<name>/eval.json`; the tables are
mean ± standard error over seeds.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

# The experiments use a narrower model than train.py's default (128 wide instead of 256): three
# times cheaper, so that all of them fit in about an hour on two CPU cores.
MODEL = ["--n_embd", "128", "--n_head", "4"]
ITERS = 1200           # iterations of a from-scratch run, as in the default recipe
SMALL_ITERS = 600      # small-data runs: 600 x 32 examples = 38 epochs of 500 problems
SEEDS = (1, 2, 3)
FRONTIER_SEEDS = (1, 2, 3, 4, 5)
ENTROPY_COEFS = (0.01, 0.03, 0.1)
RUNS, RESULTS = "runs", "results"   # checkpoints (not kept in git); logs and evaluations (kept)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
LAMBDAS = (0.0, 0.01, 0.1, 0.5, 1.0)
EVAL = ["--eval", "--json", "--num_problems", "200", "--num_samples", "5"]
TEMPERATURES = "0.5,0.7,1.0,1.3"
FRONTIER_EVAL = ["--eval", "--json", "--num_problems", "500", "--num_samples", "5", "--temperatures", TEMPERATURES]
METRICS = ("accuracy_greedy", "accuracy_sample", "accuracy_beam", "self_bleu", "self_bleu_correct",
           "distinct_2", "reward_spearman", "nll")


def lam_name(lam: float) -> str:
    return f"{lam:g}"


def plan() -> dict[str, list[tuple[str, list[str]]]]:
    """Every run: group -> [(name, train.py flags)]. Runs that start from another run's checkpoint
    come after it."""
    common = MODEL + ["--max_iters", str(ITERS), "--eval_interval", "200"]
    finetune = ["--max_iters", "400", "--eval_interval", "100", "--warmup_iters", "0",
                "--learning_rate", "5e-4", "--min_lr", "5e-5"]
    recipe = ["--lambda", "0.1", "--gamma", "0.9"]
    groups = {"sweep": [], "protocol": [], "remedies": [], "small_data": [], "online": [], "value_head": [],
              "frontier": []}
    for seed in SEEDS:
        s = ["--seed", str(seed)]
        for lam in LAMBDAS:
            groups["sweep"].append((f"sweep_lam{lam_name(lam)}_s{seed}", common + s + ["--lambda", str(lam)]))
        base = os.path.join(RUNS, f"sweep_lam0_s{seed}", "ckpt.pt")
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
    # The frontier compares methods from scratch across sampling temperatures; MLE and the recipe
    # get more seeds, since their difference is the verdict.
    for seed in FRONTIER_SEEDS:
        s = ["--seed", str(seed)]
        groups["frontier"] += [(f"sweep_lam0_s{seed}", common + s + ["--lambda", "0"]),
                               (f"gamma0.9_lam0.1_s{seed}", common + s + recipe)]
        if seed not in SEEDS:
            continue
        for lam in (0.01, 0.1, 0.5):
            groups["frontier"].append((f"sweep_lam{lam_name(lam)}_s{seed}", common + s + ["--lambda", str(lam)]))
        for coef in ENTROPY_COEFS:
            groups["frontier"].append((f"entropy{lam_name(coef)}_s{seed}",
                                       common + s + ["--lambda", "0", "--entropy_coef", str(coef)]))
        groups["frontier"] += [
            (f"head_lam0.1_s{seed}", common + s + ["--lambda", "0.1", "--value_head"]),
            (f"head_lam0.5_s{seed}", common + s + ["--lambda", "0.5", "--value_head"]),
            (f"head_gamma0.9_lam0.1_s{seed}", common + s + recipe + ["--value_head"])]
    return groups


def needs(flags: list[str]) -> str | None:
    """The run whose checkpoint this run starts from (--init_from), if any."""
    if "--init_from" not in flags:
        return None
    return os.path.basename(os.path.dirname(flags[flags.index("--init_from") + 1]))


def train_run(name: str, flags: list[str], all_runs: dict[str, list[str]]) -> None:
    """Train one run into runs/<name>, unless its checkpoint is already there (an interrupted
    run is resumed; a finished one is a no-op). A run that starts from another run's checkpoint
    trains that one first, so a fresh machine with only results/ can rebuild what it needs."""
    out = os.path.join(RUNS, name)
    base = needs(flags)
    if base and not os.path.exists(os.path.join(RUNS, base, "ckpt.pt")):
        train_run(base, all_runs[base], all_runs)
    if os.path.exists(os.path.join(out, "ckpt.pt")):
        flags = ["--resume", "--max_iters", flags[flags.index("--max_iters") + 1]]
    print(f"== {name}: python train.py {' '.join(flags)} --out_dir {out}", flush=True)
    with open(os.path.join(RUNS, f"{name}.log"), "a") as log:
        subprocess.run([sys.executable, "train.py", *flags, "--out_dir", out], check=True, env=ONE_THREAD,
                       stdout=log, stderr=subprocess.STDOUT)


def run(name: str, flags: list[str], eval_flags: list[str], result_file: str,
        all_runs: dict[str, list[str]]) -> None:
    """Train (if needed) and evaluate one run, one thread per run (jobs run side by side). What a
    report needs is kept in results/<name>/ (the log and the evaluation); a run whose result is
    there is skipped."""
    kept = os.path.join(RESULTS, name)
    if os.path.exists(os.path.join(kept, result_file)):
        return
    train_run(name, flags, all_runs)
    out = os.path.join(RUNS, name)
    result = subprocess.run([sys.executable, "sample.py", "--out_dir", out, *eval_flags], check=True,
                            capture_output=True, text=True, env=ONE_THREAD)
    os.makedirs(kept, exist_ok=True)
    shutil.copyfile(os.path.join(out, "log.jsonl"), os.path.join(kept, "log.jsonl"))
    with open(os.path.join(kept, result_file), "w") as f:
        f.write(result.stdout)


# ----------------------------------------------------------------------------------------------
# Report

def load(name: str) -> dict | None:
    path = os.path.join(RESULTS, name, "eval.json")
    if not os.path.exists(path):
        return None
    result = json.load(open(path))
    log = [json.loads(line) for line in open(os.path.join(RESULTS, name, "log.jsonl"))]
    result["val_td"] = log[-1]["val_td"]
    result["val_entropy"] = log[-1]["val_entropy"]
    result["beam_minus_greedy"] = result["accuracy_beam"] - result["accuracy_greedy"]
    result["beam_minus_sample"] = result["accuracy_beam"] - result["accuracy_sample"]
    for k in ("update_ms", "sample_ms"):  # per iteration, averaged over the run
        result[k] = sum(e[k] for e in log) / len(log)
    result["curve"] = {e["iter"]: e.get("accuracy") for e in log}
    result["nll_curve"] = {e["iter"]: e["val_nll"] for e in log}
    return result


def mean_se(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    m = sum(values) / len(values)
    if len(values) < 2:
        return f"{m:.3f}"
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))
    return f"{m:.3f} ± {se:.3f}"


def table(rows: list[tuple[str, str]], columns: tuple[str, ...]) -> str:
    """rows: (label, run name without the _s<seed> suffix)."""
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, prefix in rows:
        results = [r for r in (load(f"{prefix}_s{seed}") for seed in SEEDS) if r]
        if not results:
            continue
        cells = [mean_se([r.get(c) for r in results]) for c in columns]
        lines.append(f"| {label} ({len(results)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve(prefixes: list[tuple[str, str]], key: str = "curve") -> str:
    """Accuracy (or val nll) over iterations, mean over seeds, as a text table, at the iterations
    every run logged."""
    rows = []
    for label, prefix in prefixes:
        results = [r for r in (load(f"{prefix}_s{seed}") for seed in SEEDS) if r]
        if results:
            rows.append((label, results))
    if not rows:
        return ""
    iters = sorted(set.intersection(*(set(r[key]) for _, results in rows for r in results)))
    lines = ["| iter | " + " | ".join(str(i) for i in iters) + " |", "|---" * (len(iters) + 1) + "|"]
    for label, results in rows:
        cells = [mean_se([r[key][i] for r in results]).split(" ")[0] for i in iters]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated groups: " + ", ".join(plan()))
    parser.add_argument("--report", action="store_true", help="print the tables only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side")
    args = parser.parse_args()
    if not args.report:
        os.makedirs(RUNS, exist_ok=True)
        groups = plan()
        all_runs = {name: flags for runs in groups.values() for name, flags in runs}
        chosen = args.only.split(",") if args.only else list(groups)
        for group in chosen:  # in order: the protocol group starts from the sweep's MLE runs
            if group not in groups:
                parser.error(f"unknown group {group}")
            eval_flags, result_file = (FRONTIER_EVAL, "frontier.json") if group == "frontier" else (EVAL, "eval.json")
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(lambda job: run(*job, eval_flags, result_file, all_runs), groups[group]))
    report()


if __name__ == "__main__":
    main()
