"""Rerun the README's Results: every experiment with train.py and `sample.py --eval`, then print
the tables (markdown) from what the runs left behind.

    python experiments.py                  # everything (several hours on 2 CPU cores)
    python experiments.py --only sweep     # one group; finished runs are skipped, so it resumes
    python experiments.py --report         # only print the tables of the runs that exist
    python experiments.py --only frontier --plot   # the frontier; its tables and figures/*.png

Each run is `python train.py <flags> --out_dir runs/<name>` followed by
`python sample.py --out_dir runs/<name> --eval --json` (the frontier: 300 problems at a grid of
temperatures). Checkpoints stay in runs/ (not in git); what the tables and figures need, each
run's log.jsonl and its evaluation (eval.json, or frontier.json with one JSON line per
temperature), is kept in results/<name>/, so they rebuild on any machine and a run whose result is
there is skipped. The tables are mean ± standard error over seeds.
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
FRONTIER_EVAL = ["--eval", "--json", "--num_problems", "300", "--num_samples", "5", "--temperature", TEMPERATURES]
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
        frontier += [(f"{prefix}_s{seed}", common + ["--seed", str(seed)] + flags) for seed in SEEDS]
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

def evaluations(name: str, result_file: str = "eval.json") -> list[dict] | None:
    """The rows a run's `sample.py --eval --json` left in results/<name>/ (one per temperature),
    each with what the run's log adds; None if the run has none yet."""
    path = os.path.join(RESULTS, name, result_file)
    if not os.path.exists(path):
        return None
    log = [json.loads(line) for line in open(os.path.join(RESULTS, name, "log.jsonl"))]
    from_log = {"val_td": log[-1]["val_td"], "val_entropy": log[-1]["val_entropy"],
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


def mean_se(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    m, se = mean_and_se(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {se:.3f}"


def table(rows: list[tuple[str, str]], columns: tuple[str, ...], result_file: str = "eval.json") -> str:
    """rows: (label, run name without the _s<seed> suffix); the runs' evaluations at temperature 1."""
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, prefix in rows:
        results = [r for r in (load(f"{prefix}_s{seed}", result_file) for seed in SEEDS) if r]
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


# ----------------------------------------------------------------------------------------------
# The accuracy-diversity frontier: each method's sampled accuracy against its Self-BLEU as the
# sampling temperature moves, and the verdict at matched Self-BLEU.

FRONTIER_METHODS = [  # (label, run name without _s<seed>, seeds)
    ("MLE", "sweep_lam0", FRONTIER_SEEDS),
    *[(f"MLE + entropy {c:g}", f"entropy{c:g}", SEEDS) for c in ENTROPY_COEFS],
    *[(f"IQLearn λ = {lam:g}", f"sweep_lam{lam:g}", SEEDS) for lam in (0.01, 0.1, 0.5)],
    ("IQLearn λ = 0.1, γ = 0.9 (recipe)", "gamma0.9_lam0.1", FRONTIER_SEEDS),
    ("λ = 0.1 + value head", "head_lam0.1", SEEDS),
    ("λ = 0.5 + value head", "head_lam0.5", SEEDS),
    ("recipe + value head", "head_gamma0.9_lam0.1", SEEDS),
]
MATCHED_SELF_BLEU = (0.65, 0.7, 0.75, 0.8)   # levels at which methods are compared (MLE's range)


def frontier_curves(prefix: str, seeds: tuple[int, ...]) -> dict[int, list[dict]]:
    """seed -> that run's rows, one per temperature, for the seeds evaluated so far."""
    found = {seed: evaluations(f"{prefix}_s{seed}", "frontier.json") for seed in seeds}
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


def frontier_tables() -> str:
    temperatures = [float(t) for t in TEMPERATURES.split(",")]
    header = " | ".join(f"T = {t:g}" for t in temperatures)
    acc = ["| method | " + header + " |", "|---" * (len(temperatures) + 1) + "|"]
    bleu = list(acc)
    levels = " | ".join(f"Self-BLEU {x:g}" for x in MATCHED_SELF_BLEU)
    verdict = ["| method − MLE, same seed | " + levels + " |", "|---" * (len(MATCHED_SELF_BLEU) + 1) + "|"]
    mle = frontier_curves("sweep_lam0", FRONTIER_SEEDS)
    for label, prefix, seeds in FRONTIER_METHODS:
        curves = frontier_curves(prefix, seeds)
        if not curves:
            continue
        at = lambda key, t: mean_se([r[key] for rows in curves.values() for r in rows if r["temperature"] == t])
        name = f"{label} ({len(curves)} seeds)"
        acc.append(f"| {name} | " + " | ".join(at("accuracy_sample", t) for t in temperatures) + " |")
        bleu.append(f"| {name} | " + " | ".join(at("self_bleu", t) for t in temperatures) + " |")
        if prefix != "sweep_lam0":
            cells = []
            for level in MATCHED_SELF_BLEU:
                diffs = paired_difference(curves, mle, level)
                cells.append(f"{mean_se(diffs)} (n = {len(diffs)})" if diffs else "no overlap")
            verdict.append(f"| {label} | " + " | ".join(cells) + " |")
    return ("Sampled accuracy:\n\n" + "\n".join(acc) + "\n\nSelf-BLEU (lower = more diverse):\n\n"
            + "\n".join(bleu) + "\n\nSampled accuracy at matched Self-BLEU, paired difference to MLE "
            "(mean ± s.e. over the n seeds whose curves both reach the level; no s.e. for n = 1):\n\n" + "\n".join(verdict))


def plot_figures(folder: str = "figures") -> list[str]:
    """figures/frontier.png (accuracy against Self-BLEU through the temperatures, error bars over
    seeds) and figures/lambda_curves.png (greedy accuracy and val nll over training)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("experiments.py: error: --plot needs matplotlib (pip install matplotlib)")
    os.makedirs(folder, exist_ok=True)
    panels = [("MLE and its diversity baseline (entropy cost)", ["sweep_lam0", "entropy0.01", "entropy0.03",
                                                                  "entropy0.1", "gamma0.9_lam0.1"]),
              ("IQLearn: λ, γ and the value head", ["sweep_lam0", "sweep_lam0.01", "sweep_lam0.1", "sweep_lam0.5",
                                                    "gamma0.9_lam0.1", "head_gamma0.9_lam0.1", "head_lam0.1",
                                                    "head_lam0.5"])]
    methods = {prefix: (label, seeds) for label, prefix, seeds in FRONTIER_METHODS}
    found = {prefix: frontier_curves(prefix, seeds) for prefix, (_, seeds) in methods.items()}
    drawn = []  # a panel whose methods have no runs yet beyond another panel's is left out
    for title, prefixes in panels:
        present = [p for p in prefixes if found[p]]
        missing = [methods[p][0] for p in prefixes if not found[p]]
        if missing:
            title += "\nnot run yet: " + ", ".join(missing)
        if present and all(set(present) - set(other) for _, other in drawn):
            drawn.append((title, present))
    fig, axes = plt.subplots(1, len(drawn), figsize=(6.5 * len(drawn) + 0.5, 5.5), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (title, prefixes) in zip(axes, drawn):
        for prefix in prefixes:
            label, curves = methods[prefix][0], found[prefix]
            temps = sorted({r["temperature"] for rows in curves.values() for r in rows})
            stats = [[mean_and_se([r[k] for rows in curves.values() for r in rows if r["temperature"] == t])
                      for k in ("self_bleu", "accuracy_sample")] for t in temps]
            (x, xe), (y, ye) = zip(*[s[0] for s in stats]), zip(*[s[1] for s in stats])
            line = ax.errorbar(x, y, xerr=xe, yerr=ye, marker="o", capsize=2, label=f"{label} ({len(curves)} seeds)")
            if prefix in ("sweep_lam0", "gamma0.9_lam0.1"):
                for xi, yi, t in zip(x, y, temps):
                    ax.annotate(f"T={t:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color=line[0].get_color())
        ax.set_title(title if len(drawn) > 1 else "", fontsize=9)
        ax.set(xlabel="Self-BLEU among a problem's 5 samples (lower = more diverse)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("sampled accuracy (300 val problems)")
    grid = TEMPERATURES.split(",")
    fig.suptitle(f"Accuracy–diversity frontier\none point per sampling temperature ({grid[0]} → {grid[-1]}, "
                 "left to right)")
    fig.tight_layout()
    paths = [os.path.join(folder, "frontier.png"), os.path.join(folder, "lambda_curves.png")]
    fig.savefig(paths[0], dpi=110)

    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for prefix in ("sweep_lam0", "sweep_lam0.01", "sweep_lam0.1", "sweep_lam0.5", "gamma0.9_lam0.1"):
        label, logs = methods[prefix][0], [rows[0] for rows in found[prefix].values()]
        if not logs:
            continue
        iters = sorted(set.intersection(*(set(r["curve"]) for r in logs)))
        for ax, key in ((acc_ax, "curve"), (nll_ax, "nll_curve")):
            m, se = zip(*[mean_and_se([r[key][i] for r in logs]) for i in iters])
            ax.errorbar(iters, m, yerr=se, marker="o", capsize=2, label=f"{label} ({len(logs)} seeds)")
    acc_ax.set(xlabel="iteration", ylabel="greedy accuracy (200 val problems)", title="Greedy accuracy over training")
    nll_ax.set(xlabel="iteration", ylabel="val nll per token", title="Validation nll over training", yscale="log")
    for ax in (acc_ax, nll_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    return paths


def report_frontier() -> None:
    print("### Frontier: accuracy against diversity across sampling temperatures\n")
    print(frontier_tables())
    print("\n### Value head, from scratch (300 val problems, temperature 1)\n")
    scratch = [("MLE", "sweep_lam0"), ("λ = 0.1", "sweep_lam0.1"), ("λ = 0.1 + head", "head_lam0.1"),
               ("λ = 0.5", "sweep_lam0.5"), ("λ = 0.5 + head", "head_lam0.5"),
               ("λ = 0.1, γ = 0.9", "gamma0.9_lam0.1"), ("λ = 0.1, γ = 0.9 + head", "head_gamma0.9_lam0.1")]
    print(table(scratch, METRICS + ("val_td", "reward_mean"), result_file="frontier.json"))
    print("\n### Value head, the protocol: MLE, then 400 iterations of fine-tuning\n")
    print(table([("MLE, then MLE", "finetune_lam0"), ("then λ = 0.1", "finetune_lam0.1"),
                 ("then λ = 0.1 + head", "finetune_head_lam0.1"), ("then λ = 0.5", "finetune_lam0.5"),
                 ("then λ = 0.5 + head", "finetune_head_lam0.5")], METRICS + ("val_td", "reward_mean")))
    print("\n### Rewards: pooled and within-problem correlation of R with correctness (temperature 1)\n")
    rewards = [("MLE (γ = 1)", "sweep_lam0"), ("λ = 0.01 (γ = 1)", "sweep_lam0.01"), ("λ = 0.1 (γ = 1)", "sweep_lam0.1"),
               ("λ = 0.5 (γ = 1)", "sweep_lam0.5"), ("λ = 0.1, γ = 0.9", "gamma0.9_lam0.1"),
               ("λ = 0.1, γ = 0.9 + head", "head_gamma0.9_lam0.1"), ("λ = 0.5 + head (γ = 1)", "head_lam0.5")]
    print(table(rewards, ("reward_spearman", "reward_spearman_within", "reward_within_problems"),
                result_file="frontier.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated groups: " + ", ".join(plan()))
    parser.add_argument("--report", action="store_true", help="print the tables only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side")
    parser.add_argument("--plot", action="store_true", help="also draw figures/*.png (needs matplotlib)")
    args = parser.parse_args()
    groups = plan()
    chosen = args.only.split(",") if args.only else list(groups)
    for group in chosen:
        if group not in groups:
            parser.error(f"unknown group {group}")
    if not args.report:
        os.makedirs(RUNS, exist_ok=True)
        all_runs = {name: flags for runs in groups.values() for name, flags in runs}
        for group in chosen:  # in order: the protocol group starts from the sweep's MLE runs
            eval_flags, result_file = (FRONTIER_EVAL, "frontier.json") if group == "frontier" else (EVAL, "eval.json")
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(lambda job: run(*job, eval_flags, result_file, all_runs), groups[group]))
    if set(chosen) - {"frontier", "value_head"}:
        report()
    if set(chosen) & {"frontier", "value_head"}:
        report_frontier()
    if args.plot:
        print("\n".join(f"wrote {path}" for path in plot_figures()))


if __name__ == "__main__":
    main()
