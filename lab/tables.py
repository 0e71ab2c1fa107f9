"""The Results' tables (markdown), from what the runs left in results/: each cell is a mean ± s.e.
over seeds or a paired 95% interval with the word of the one rule (stats.CLAIM_RULE). The rows name
registry methods; a label is the table's own wording."""

import os

from lab import registry
from lab.registry import (ENTROPY, FINETUNED, FINETUNED_HEAD, FINETUNED_HEAD_RECIPE, GAIL, GAIL_NO_MLE,
                          GAIL_NO_MLE_SHUFFLED, GAIL_SHUFFLED, HEAD, HEAD_RECIPE, MLE, QUICKSTART, RECIPE,
                          SHIFT_BASE, SHIFT_IQ, SHIFT_METHODS, SHIFT_MLE, SHIFT_MLE_GRID, SHIFT_MLE_TUNED, SHIFT_OTHERS, SWEEP, TEMPERATURES,
                          Method)
from lab.results import facts_of, frontier_curves, largest_fall, load, log_of, seeds_of
from lab.stats import CLAIM_RULE, interval_text, mean_se_text, paired_difference, signed

METRICS = ("accuracy_greedy", "accuracy_sample", "accuracy_beam", "self_bleu", "self_bleu_correct",
           "distinct_2", "reward_spearman", "nll")
NOT_KEPT = "(no run of this table has its result in results/ yet)"
UNKNOWN = "unknown"


def table(rows: list[tuple[str, Method]], columns: tuple[str, ...], result_file: str = "eval.json") -> str:
    """The methods' evaluations at temperature 1, over every seed that has one."""
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, method in rows:
        results = [r for r in (load(method.name(s), result_file) for s in seeds_of(method, result_file)) if r]
        if not results:
            continue
        cells = [mean_se_text([r.get(c) for r in results]) for c in columns]
        lines.append(f"| {label} ({len(results)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else NOT_KEPT


def curve(rows: list[tuple[str, Method]], key: str = "curve", result_file: str = "eval.json") -> str:
    """Accuracy (or val nll) over iterations, mean over seeds, as a text table, at the iterations
    any run logged ("–" where a method's runs did not all log it: a run stopped earlier)."""
    found = []
    for label, method in rows:
        results = [r for r in (load(method.name(s), result_file) for s in seeds_of(method, result_file)) if r]
        if results:
            found.append((label, results))
    if not found:
        return NOT_KEPT
    iters = sorted(set.union(*(set(r[key]) for _, results in found for r in results)))
    lines = ["| iter | " + " | ".join(str(i) for i in iters) + " |", "|---" * (len(iters) + 1) + "|"]
    for label, results in found:
        cells = [mean_se_text([r[key][i] for r in results]).split(" ")[0] if all(i in r[key] for r in results)
                 else "–" for i in iters]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# lower is better: the claim is < 0 (beam − greedy: the paper's "depends less on beam search")
CLAIM_SIGN = {"self_bleu": -1, "self_bleu_correct": -1, "nll": -1, "beam_minus_greedy": -1}


def paired_table(rows: list[tuple[str, Method, Method]], columns: tuple[str, ...],
                 result_file: str = "eval.json") -> str:
    """rows: (label, method, baseline). Each cell: the per-seed difference method − baseline at
    temperature 1 over the seeds both have, mean ± s.e. [95% t interval] and what it says of the
    claim that the difference is positive (negative for Self-BLEU and nll, where lower is the
    claimed improvement: more diverse, more likely)."""
    header = [f"{c} (claim {'< 0' if CLAIM_SIGN.get(c, 1) < 0 else '> 0'})" for c in columns]
    lines = ["| paired difference | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, method, baseline in rows:
        seeds = sorted(set(seeds_of(method, result_file)) & set(seeds_of(baseline, result_file)))
        if not seeds:
            continue
        pairs = [(load(method.name(s), result_file), load(baseline.name(s), result_file)) for s in seeds]
        cells = [interval_text([a[c] - b[c] for a, b in pairs if a.get(c) is not None and b.get(c) is not None],
                               CLAIM_SIGN.get(c, 1)) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def minutes(seconds) -> str:
    return seconds if isinstance(seconds, str) else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def quickstart_table() -> str:
    """The README quick start's table: its two commands' last log line (greedy accuracy on 200 val
    problems, val nll), training wall time, and their `sample.py --eval` (beam 4, Self-BLEU)."""
    commands = zip(QUICKSTART, ("python train.py --lambda 0.5", "python train.py --lambda 0 --out_dir out_mle"))
    lines = ["| command | greedy accuracy | val nll | time | beam-4 accuracy | Self-BLEU |", "|---|---|---|---|---|---|"]
    for method, command in commands:
        row = load(method.prefix)
        if row is None:
            continue
        last = log_of(method.prefix)[-1]
        lines.append(f"| `{command}` | {last['accuracy']:.3f} | {last['val_nll']:.3f} | "
                     f"{minutes(facts_of(method.prefix).get('train_seconds', UNKNOWN))} | {row['accuracy_beam']:.3f} | "
                     f"{row['self_bleu']:.3f} |")
    facts = facts_of(QUICKSTART[1].prefix)
    machine_line = (f"\n\nMachine: {facts['cpu']}, {facts['threads']} thread(s), torch {facts['torch']}, "
                    f"commit {str(facts['commit'])[:7]}.") if facts else ""
    return "### Quick start\n\n" + "\n".join(lines) + machine_line


def defaults_report() -> str:
    """The quick start's default over seeds beside the cheaper default tried against it."""
    columns = ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "nll")
    methods = [*registry.DEFAULT.values(), *registry.CHEAPER.values()]
    pairs = [(f"{registry.CHEAPER[lam].prefix} − {default.prefix}", registry.CHEAPER[lam], default)
             for lam, default in registry.DEFAULT.items()]
    return ("### The quick start's default over seeds, and a cheaper default (800 iterations)\n\n"
            + table([(m.prefix, m) for m in methods], columns) + "\n\nPaired by seed:\n\n"
            + paired_table(pairs, columns))


# ----------------------------------------------------------------------------------------------
# The accuracy-diversity frontier: each method's sampled accuracy against its Self-BLEU as the
# sampling temperature moves, and the verdict at matched Self-BLEU.

FRONTIER_METHODS = [MLE, *ENTROPY.values(), SWEEP[0.01], SWEEP[0.1], SWEEP[0.5], RECIPE, HEAD[0.1], HEAD[0.5],
                    HEAD_RECIPE]
MATCHED_SELF_BLEU = (0.65, 0.7, 0.75, 0.8)   # levels at which methods are compared (MLE's range)
# Paired comparisons at matched Self-BLEU beyond "method − MLE": (label, method, baseline).
MATCHED_EXTRA = [("MLE + entropy 0.1 − recipe", ENTROPY[0.1], RECIPE),
                 ("recipe + value head − recipe", HEAD_RECIPE, RECIPE)]


def matched_row(label: str, method: Method, baseline: Method) -> str:
    curves, base = frontier_curves(method), frontier_curves(baseline)
    cells = [interval_text(d) if (d := paired_difference(curves, base, level)) else "no overlap"
             for level in MATCHED_SELF_BLEU]
    return f"| {label} | " + " | ".join(cells) + " |"


def frontier_tables(methods: list[Method] = FRONTIER_METHODS, baseline: Method = MLE,
                    extra: list[tuple[str, Method, Method]] = MATCHED_EXTRA) -> str:
    """Sampled accuracy and Self-BLEU per temperature of each method, and the verdict at matched
    Self-BLEU: each method − baseline, and the `extra` pairs."""
    temperatures = [float(t) for t in TEMPERATURES.split(",")]
    header = " | ".join(f"T = {t:g}" for t in temperatures)
    acc = ["| method | " + header + " |", "|---" * (len(temperatures) + 1) + "|"]
    bleu = list(acc)
    levels = " | ".join(f"Self-BLEU {x:g}" for x in MATCHED_SELF_BLEU)
    verdict = [f"| method − {baseline.label}, same seed | " + levels + " |",
               "|---" * (len(MATCHED_SELF_BLEU) + 1) + "|"]
    for method in methods:
        curves = frontier_curves(method)
        if not curves:
            continue
        at = lambda key, t: mean_se_text([r[key] for rows in curves.values() for r in rows if r["temperature"] == t])
        name = f"{method.label} ({len(curves)} seeds)"
        acc.append(f"| {name} | " + " | ".join(at("accuracy_sample", t) for t in temperatures) + " |")
        bleu.append(f"| {name} | " + " | ".join(at("self_bleu", t) for t in temperatures) + " |")
        if method != baseline:
            verdict.append(matched_row(method.label, method, baseline))
    between = ["| paired difference | " + levels + " |", verdict[1]]
    between += [matched_row(*row) for row in extra if frontier_curves(row[1]) and frontier_curves(row[2])]
    return ("Sampled accuracy:\n\n" + "\n".join(acc) + "\n\nSelf-BLEU (lower = more diverse):\n\n"
            + "\n".join(bleu) + "\n\nSampled accuracy at matched Self-BLEU, paired difference to MLE of the same "
            "seed: mean ± s.e. [95% t interval] over the n seeds whose curves both reach the level, and what "
            "the interval says of the claim \"the method is more accurate than MLE\" (the rule below):\n\n"
            + "\n".join(verdict) + "\n\nThe same between two methods (claim: the first is more accurate):\n\n"
            + "\n".join(between) + "\n\nThe rule: " + CLAIM_RULE)


def gap_closed(head: Method, without: Method, mle: Method, metric: str) -> list[float]:
    """Per seed: the share of the gap from fine-tuning without the head to MLE-then-MLE that the
    head closes, (head − without) / (mle − without), in `metric` at temperature 1."""
    shares = []
    for s in sorted(set(seeds_of(head)) & set(seeds_of(without)) & set(seeds_of(mle))):
        h, w, m = (load(method.name(s))[metric] for method in (head, without, mle))
        if m != w:
            shares.append((h - w) / (m - w))
    return shares


def report_frontier() -> None:
    print("### Frontier: accuracy against diversity across sampling temperatures\n")
    print(frontier_tables())
    print("\n### From scratch at temperature 1 (300 val problems; every seed that exists)\n")
    scratch = [("MLE", MLE), ("λ = 0.01", SWEEP[0.01]), ("λ = 0.1", SWEEP[0.1]), ("λ = 0.1 + head", HEAD[0.1]),
               ("λ = 0.5", SWEEP[0.5]), ("λ = 0.5 + head", HEAD[0.5]), ("λ = 0.1, γ = 0.9", RECIPE),
               ("λ = 0.1, γ = 0.9 + head", HEAD_RECIPE), *[(m.label, m) for m in ENTROPY.values()]]
    print(table(scratch, METRICS + ("val_td", "reward_mean"), result_file="frontier.json"))
    print("\nPaired by seed, at temperature 1:\n")
    print(paired_table([(f"{label} − MLE", method, MLE) for label, method in scratch[1:]]
                       + [("λ = 0.1, γ = 0.9 + head − λ = 0.1, γ = 0.9", HEAD_RECIPE, RECIPE),
                          ("λ = 0.1, γ = 0.9 − λ = 0.1", RECIPE, SWEEP[0.1])],
                       ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "self_bleu_correct", "nll"),
                       result_file="frontier.json"))
    print("\n### Value head, the protocol: MLE, then 400 iterations of fine-tuning\n")
    print(table([("MLE, then MLE", FINETUNED[0.0]), ("then λ = 0.1", FINETUNED[0.1]),
                 ("then λ = 0.1 + head", FINETUNED_HEAD[0.1]), ("then λ = 0.5", FINETUNED[0.5]),
                 ("then λ = 0.5 + head", FINETUNED_HEAD[0.5])], METRICS + ("val_td", "reward_mean")))
    print("\nPaired by seed:\n")
    print(paired_table([("then λ = 0.5 + head − then λ = 0.5", FINETUNED_HEAD[0.5], FINETUNED[0.5]),
                        ("then λ = 0.5 + head − MLE, then MLE", FINETUNED_HEAD[0.5], FINETUNED[0.0]),
                        ("then λ = 0.5 − MLE, then MLE", FINETUNED[0.5], FINETUNED[0.0]),
                        ("then λ = 0.1 + head − then λ = 0.1", FINETUNED_HEAD[0.1], FINETUNED[0.1])],
                       ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll")))
    print("\nShare of the gap (then λ = 0.5 → MLE, then MLE) that the head closes, per seed "
          "(head − without) / (MLE − without):\n")
    for metric in ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "nll"):
        shares = gap_closed(FINETUNED_HEAD[0.5], FINETUNED[0.5], FINETUNED[0.0], metric)
        print(f"- {metric}: {interval_text(shares, word=False) if shares else 'n/a'}")
    print("\n### Rewards: pooled and within-problem correlation of R with correctness (temperature 1)\n")
    rewards = [("MLE (γ = 1)", MLE), ("λ = 0.01 (γ = 1)", SWEEP[0.01]), ("λ = 0.1 (γ = 1)", SWEEP[0.1]),
               ("λ = 0.5 (γ = 1)", SWEEP[0.5]), ("λ = 0.1, γ = 0.9", RECIPE),
               ("λ = 0.1, γ = 0.9 + head", HEAD_RECIPE), ("λ = 0.5 + head (γ = 1)", HEAD[0.5])]
    columns = ("reward_spearman", "reward_spearman_within", "reward_within_problems")
    print(table(rewards, columns, result_file="frontier.json"))
    print("\nPaired by seed:\n")
    print(paired_table([(f"{label} − MLE", method, MLE) for label, method in rewards[1:]],
                       columns[:2], result_file="frontier.json"))


# ----------------------------------------------------------------------------------------------
# GAIL against IQLearn in the fine-tuning protocol: accuracy, the shuffled-reward controls, the
# frontier, and stability (how far each run falls below the MLE model it started from).

GAIL_ROWS = [FINETUNED[0.0], FINETUNED_HEAD[0.5], FINETUNED_HEAD_RECIPE, GAIL, GAIL_SHUFFLED, GAIL_NO_MLE,
             GAIL_NO_MLE_SHUFFLED]
GAIL_FRONTIER = [FINETUNED[0.0], FINETUNED_HEAD[0.5], GAIL, FINETUNED_HEAD_RECIPE]
FALL = 0.10   # a run is unstable if its greedy accuracy falls this far below its MLE base's
GAIL_PAIRED = [("GAIL − MLE, then MLE", GAIL, FINETUNED[0.0]),
               ("GAIL − the recipe + head", GAIL, FINETUNED_HEAD_RECIPE),
               ("GAIL − IQLearn λ = 0.5 + head", GAIL, FINETUNED_HEAD[0.5]),
               ("GAIL − its shuffled control", GAIL, GAIL_SHUFFLED),
               ("GAIL without MLE − its shuffled control", GAIL_NO_MLE, GAIL_NO_MLE_SHUFFLED)]
STABILITY_PAIRS = [("the recipe + head vs GAIL", FINETUNED_HEAD_RECIPE, GAIL),
                   ("IQLearn λ = 0.5 + head vs GAIL", FINETUNED_HEAD[0.5], GAIL),
                   ("the recipe + head vs GAIL without the MLE loss", FINETUNED_HEAD_RECIPE, GAIL_NO_MLE),
                   ("GAIL vs GAIL without the MLE loss", GAIL, GAIL_NO_MLE),
                   ("its shuffled control vs GAIL (does the discriminator destabilise it?)", GAIL_SHUFFLED, GAIL),
                   ("MLE, then MLE vs GAIL", FINETUNED[0.0], GAIL)]
GAIL_MATCHED = [*GAIL_PAIRED[1:3], ("the recipe + head − IQLearn λ = 0.5 + head", FINETUNED_HEAD_RECIPE,
                                    FINETUNED_HEAD[0.5])]


def with_base(method: Method) -> list[int]:
    """The method's evaluated seeds whose MLE base's log is kept (the stability measure needs it)."""
    return [s for s in seeds_of(method) if os.path.exists(os.path.join(registry.RESULTS, MLE.name(s), "log.jsonl"))]


def gail_report() -> str:
    columns = ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll")
    text = ["At temperature 1 (200 val problems, 5 samples each):\n", table([(m.label, m) for m in GAIL_ROWS], columns),
            "\nPaired by seed (does the discriminator matter, and does GAIL beat the others):\n",
            paired_table(GAIL_PAIRED, columns),
            "\nThe discriminator's accuracy on expert vs policy tokens over training (0.5 = chance), mean over seeds:\n"]
    gail_runs = [m for m in GAIL_ROWS if m.script == "gail.py"]
    iters = sorted({e["iter"] for m in gail_runs for s in seeds_of(m) for e in log_of(m.name(s))})
    lines = ["| run | " + " | ".join(f"iter {i}" for i in iters) + " |", "|---" * (len(iters) + 1) + "|"]
    for method in gail_runs:
        logs = [{e["iter"]: e["disc_accuracy"] for e in log_of(method.name(s))} for s in seeds_of(method)]
        if logs:
            lines.append(f"| {method.label} ({len(logs)} seeds) | "
                         + " | ".join(mean_se_text([log.get(i) for log in logs]) for i in iters) + " |")
    text += ["\n".join(lines), f"\nStability: the largest fall of greedy accuracy below the run's MLE base "
             f"(200 val problems, at any of its evaluations), per seed, and the runs that fell more than {FALL:.2f}:\n",
             "| run | largest fall, per seed | mean ± s.e. | runs that fell > " + f"{FALL:.2f} |", "|---|---|---|---|"]
    for method in GAIL_ROWS:
        falls = {s: largest_fall(method, s) for s in with_base(method)}
        if falls:
            text.append(f"| {method.label} | " + ", ".join(f"s{s}: {signed(f)}" for s, f in falls.items())
                        + f" | {mean_se_text(list(falls.values()))} | {sum(f > FALL for f in falls.values())} of {len(falls)} |")
    text += ["\nPaired by seed, the claim that the first is the stabler (its largest fall is smaller):\n"]
    for label, stable, other in STABILITY_PAIRS:
        seeds = sorted(set(with_base(stable)) & set(with_base(other)))
        if seeds:
            text.append(f"- {label}: " + interval_text([largest_fall(stable, s) - largest_fall(other, s) for s in seeds],
                                                       sign=-1))
    frontier = [m for m in GAIL_ROWS if m in GAIL_FRONTIER]
    return "\n".join(text) + ("\n\nThe frontier (300 val problems at temperatures " + TEMPERATURES + "). "
                              + frontier_tables(frontier, FINETUNED[0.0], GAIL_MATCHED))


# ----------------------------------------------------------------------------------------------
# §11, the paper's regime: one pretrained base, fine-tuned on a small shifted task. MLE is tuned
# on the val split by one rule; everything reported is on the test split.

TUNING_SEEDS = (1, 2)
SHIFT_GAIL = SHIFT_OTHERS[1]
SHIFT_PAIRS = [("recipe + value head − recipe without it", SHIFT_IQ[0], SHIFT_IQ[2]),
               ("recipe + value head − GAIL", SHIFT_IQ[0], SHIFT_OTHERS[1]),
               ("recipe + value head − MLE + entropy 0.01", SHIFT_IQ[0], SHIFT_OTHERS[0])]


def tuning_cells() -> dict[tuple[str, int], tuple[float, float]]:
    """(grid run's prefix, iteration) -> (mean greedy accuracy, mean val nll) over TUNING_SEEDS on
    the val split, from the logs of MLE's tuning grid."""
    cells = {}
    for method in SHIFT_MLE_GRID.values():
        if not all(os.path.exists(os.path.join(registry.RESULTS, method.name(s), "log.jsonl")) for s in TUNING_SEEDS):
            continue
        logs = [{e["iter"]: e for e in log_of(method.name(s))} for s in TUNING_SEEDS]
        for it in sorted(set.intersection(*(set(log) for log in logs))):
            cells[method.prefix, it] = (sum(log[it]["accuracy"] for log in logs) / len(logs),
                                        sum(log[it]["val_nll"] for log in logs) / len(logs))
    return cells


def tuned_choice() -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The rule that picks the tuned MLE: the (configuration, stopping iteration) of the highest
    mean val greedy accuracy (ties: the lower val nll); beside it, the one of the lowest val nll."""
    cells = tuning_cells()
    if not cells:
        return None
    by_accuracy = max(cells, key=lambda k: (cells[k][0], -cells[k][1]))
    return by_accuracy, min(cells, key=lambda k: cells[k][1])


def shift_report() -> str:
    cells, choice = tuning_cells(), tuned_choice()
    text = []
    base = log_of(SHIFT_BASE.name(1))[-1] if seeds_of(SHIFT_BASE) else None
    if base:
        text.append(f"The base ({SHIFT_BASE.name(1)}): greedy accuracy {base['accuracy']:.3f} and val nll "
                    f"{base['val_nll']:.3f} on its own task (200 val problems of 2-3 steps).\n")
    if choice:
        text.append("MLE's tuning on the val split (mean of seeds 1-2; best greedy accuracy over the logged "
                    "iterations, and the lowest val nll):\n")
        text.append("| configuration | best greedy (iteration) | lowest val nll (iteration) | greedy / val nll at 600 |\n|---|---|---|---|")
        for method in SHIFT_MLE_GRID.values():
            mine = {it: v for (prefix, it), v in cells.items() if prefix == method.prefix}
            if mine:
                acc, nll = max(mine, key=lambda i: mine[i][0]), min(mine, key=lambda i: mine[i][1])
                text.append(f"| {method.prefix} | {mine[acc][0]:.3f} ({acc}) | {mine[nll][1]:.3f} ({nll}) | "
                            f"{mine[max(mine)][0]:.3f} / {mine[max(mine)][1]:.3f} |")
        (acc_prefix, acc_it), (nll_prefix, nll_it) = choice
        text.append(f"\nThe rule picks {acc_prefix} stopped at iteration {acc_it} (by val nll it would be "
                    f"{nll_prefix} at {nll_it}); the registry's tuned MLE is {SHIFT_MLE_TUNED.prefix}.\n")
    columns = ("accuracy_greedy", "accuracy_beam", "accuracy_sample", "self_bleu", "nll", "beam_minus_greedy",
               "reward_spearman_within")
    rows = [(m.label, m) for m in SHIFT_METHODS]
    text += ["On the test split (300 problems) at temperature 1:\n", table(rows, columns, "frontier.json"),
             "\nPaired by seed, against the tuned MLE and against the protocol's untuned one:\n",
             paired_table([(f"{m.label} − tuned MLE", m, SHIFT_MLE_TUNED) for m in SHIFT_METHODS
                           if m is not SHIFT_MLE_TUNED]
                          + [(f"{m.label} − untuned MLE", m, SHIFT_MLE) for m in SHIFT_METHODS
                             if m not in (SHIFT_MLE, SHIFT_MLE_TUNED)],
                          (*columns[:5], "beam_minus_greedy", "reward_spearman_within"), "frontier.json"),
             "\nVal nll over iterations (val split, mean over seeds):\n", curve(rows, "nll_curve", "frontier.json"),
             "\nGreedy accuracy over iterations (val split, mean over seeds):\n", curve(rows, "curve", "frontier.json"),
             "\nThe frontier on the test split. " + frontier_tables(SHIFT_METHODS, SHIFT_MLE_TUNED, SHIFT_PAIRS)]
    gail_logs = [log_of(SHIFT_GAIL.name(s)) for s in seeds_of(SHIFT_GAIL, "frontier.json")]
    if gail_logs:   # the discriminator over all tokens and at the answer's (the interval's mean, per evaluation)
        text.append("\nGAIL's discriminator, balanced accuracy before it trains on each batch, mean over seeds "
                    "(all tokens / the answer's tokens):\n")
        iters = [e["iter"] for e in gail_logs[0]]
        text.append("| iter | " + " | ".join(map(str, iters)) + " |\n" + "|---" * (len(iters) + 1) + "|")
        for key in ("disc_accuracy", "disc_answer_accuracy"):
            cells = [mean_se_text([log[i][key] for log in gail_logs]).split(" ")[0] for i in range(len(iters))]
            text.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(text)
