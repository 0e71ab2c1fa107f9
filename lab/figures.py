"""The Results' figures (figures/*.png, with matplotlib, imported only here): the frontier, its
verdict at matched Self-BLEU, the λ curves, and GAIL's stability."""

import math
import os

from errors import UserError
from lab.registry import ENTROPY, HEAD, HEAD_RECIPE, MLE, RECIPE, SHIFT_METHODS, SHIFT_MLE_TUNED, SWEEP, TEMPERATURES
from lab.reward_sites import METHODS as REWARD_METHODS, SEEDS as REWARD_SEEDS, SITES, reward_sites
from lab.results import base_accuracy, frontier_curves, largest_fall, log_of, seeds_of
from lab.stats import mean_and_se, paired_difference, t_interval
from lab.tables import FALL, FRONTIER_METHODS, GAIL_ROWS, MATCHED_SELF_BLEU


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    return plt


def saved(plt, fig, folder: str, name: str) -> str:
    """Write the figure to folder/name (the folder made if need be) at the one resolution, close it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_figures(folder: str = "figures") -> list[str]:
    """figures/frontier.png (accuracy against Self-BLEU through the temperatures, error bars over
    seeds), figures/frontier_difference.png (the verdict: method − MLE at matched Self-BLEU, one dot
    per seed, the mean and its 95% t interval) and figures/lambda_curves.png (greedy accuracy and
    val nll over training)."""
    plt = pyplot()
    found = {method: frontier_curves(method) for method in FRONTIER_METHODS}
    panels = [("MLE, its entropy cost, and the recipe", [MLE, *ENTROPY.values(), RECIPE]),
              ("IQLearn: λ, γ and the value head", [MLE, SWEEP[0.01], SWEEP[0.1], SWEEP[0.5], RECIPE, HEAD_RECIPE,
                                                    HEAD[0.1], HEAD[0.5]])]
    panels = [(title, [m for m in methods if found[m]]) for title, methods in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 6.2), sharey=True, squeeze=False)
    for ax, (title, methods) in zip(axes[0], panels):
        for method in methods:
            curves = found[method]
            temps = sorted({r["temperature"] for rows in curves.values() for r in rows})
            stats = [[mean_and_se([r[k] for rows in curves.values() for r in rows if r["temperature"] == t])
                      for k in ("self_bleu", "accuracy_sample")] for t in temps]
            (x, xe), (y, ye) = zip(*[s[0] for s in stats]), zip(*[s[1] for s in stats])
            ax.errorbar(x, y, xerr=xe, yerr=ye, marker="o", markersize=4, capsize=2, color=method.colour,
                        lw=2.2 if method in (MLE, RECIPE) else 1.3, label=f"{method.label} ({len(curves)} seeds)")
            if method == MLE:
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
    paths = [saved(plt, fig, folder, "frontier.png")]

    compared = [m for m in (RECIPE, SWEEP[0.01], SWEEP[0.1], ENTROPY[0.1], HEAD_RECIPE, HEAD[0.1], HEAD[0.5], SWEEP[0.5])
                if found[m]]
    fig, ax = plt.subplots(figsize=(12.5, 5.8))
    width = 0.03 / max(1, len(compared) - 1)
    shown, bars = [0.0], []   # the y range: every seed's dot and every interval of 3 or more seeds
    for i, method in enumerate(compared):
        colour, n_seeds = method.colour, 0
        for level in MATCHED_SELF_BLEU:
            x = level + 0.015 - i * width
            diffs = paired_difference(found[method], found[MLE], level)
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
        ax.plot([], [], "D", color=colour, label=f"{method.label} (≤ {n_seeds} seeds)")
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
    paths.append(saved(plt, fig, folder, "frontier_difference.png"))

    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method in (MLE, SWEEP[0.01], SWEEP[0.1], SWEEP[0.5], RECIPE):
        logs = [rows[0] for rows in found[method].values()]
        if not logs:
            continue
        iters = sorted(set.intersection(*(set(r["curve"]) for r in logs)))
        for ax, key in ((acc_ax, "curve"), (nll_ax, "nll_curve")):
            m, se = zip(*[mean_and_se([r[key][i] for r in logs]) for i in iters])
            ax.errorbar(iters, m, yerr=se, marker="o", capsize=2, color=method.colour,
                        label=f"{method.label} ({len(logs)} seeds)")
    acc_ax.set(xlabel="iteration", ylabel="greedy accuracy (200 val problems)", title="Greedy accuracy over training")
    nll_ax.set(xlabel="iteration", ylabel="val nll per token", title="Validation nll over training", yscale="log")
    for ax in (acc_ax, nll_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.text(0.5, 0.01, "Bars: ±1 standard error over seeds.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return [*paths, saved(plt, fig, folder, "lambda_curves.png")]




def plot_gail(folder: str = "figures") -> str:
    """figures/gail_stability.png: each method's greedy accuracy over fine-tuning, one line per seed,
    from its MLE base (iteration 0), with the line FALL below the base; and the discriminator's accuracy."""
    plt = pyplot()
    shown = [m for m in GAIL_ROWS if seeds_of(m)]
    columns = math.ceil((len(shown) + 1) / 2)
    fig, grid = plt.subplots(2, columns, figsize=(3.6 * columns, 7.6), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(shown) + 1:]:
        ax.set_visible(False)
    styles = {1: "-", 2: "--", 3: ":", 4: "-."}
    for ax, method in zip(axes, shown):
        falls = 0
        for s in seeds_of(method):
            log = log_of(method.name(s))
            base = base_accuracy(s)
            ax.plot([0] + [e["iter"] for e in log], [base] + [e["accuracy"] for e in log], styles.get(s, "-"),
                    marker="o", markersize=3, color=method.colour, label=f"seed {s}")
            ax.axhline(base - FALL, color=method.colour, lw=0.6, ls=styles.get(s, "-"), alpha=0.5)
            falls += largest_fall(method, s) > FALL
        ax.set_title(f"{method.label}\n{falls} of {len(seeds_of(method))} fell > {FALL * 100:.0f} points", fontsize=9)
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
    for method in shown:
        if method.script == "gail.py":
            for s in seeds_of(method):
                log = log_of(method.name(s))
                disc.plot([e["iter"] for e in log], [e["disc_accuracy"] for e in log], styles.get(s, "-"), marker="o",
                          markersize=3, color=method.colour, label=method.label if s == seeds_of(method)[0] else None)
    disc.axhline(0.5, color="black", lw=0.8)
    disc.set_title("GAIL's discriminator:\naccuracy on expert vs policy tokens", fontsize=9)
    disc.set_xlabel("fine-tuning iteration")
    disc.set_ylabel("balanced accuracy (0.5 = chance)")
    disc.grid(alpha=0.3)
    disc.legend(fontsize=7, loc="center right")
    fig.text(0.5, 0.01, f"Thin horizontal lines: each seed's MLE base minus {FALL * 100:.0f} points (the instability "
             "threshold). The discriminator's accuracy is measured on each batch before it trains on it.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return saved(plt, fig, folder, "gail_stability.png")


def plot_shift(folder: str = "figures") -> str:
    """figures/shift.png (Results §11), one colour per method in every panel: val nll and greedy
    accuracy over fine-tuning (val split), and the test split's frontier (sampled accuracy against
    Self-BLEU through the temperatures)."""
    plt = pyplot()
    found = {m: frontier_curves(m) for m in SHIFT_METHODS}
    found = {m: c for m, c in found.items() if c}
    fig, (nll_ax, acc_ax, front_ax) = plt.subplots(1, 3, figsize=(16, 5.4))
    for method, curves in found.items():
        rows = [r[0] for r in curves.values()]
        label = f"{method.label} ({len(rows)} seeds)"
        width = 2.4 if method is SHIFT_MLE_TUNED else 1.4
        iters = sorted(set.intersection(*(set(r["curve"]) for r in rows)))
        for ax, key in ((nll_ax, "nll_curve"), (acc_ax, "curve")):
            m, se = zip(*[mean_and_se([r[key][i] for r in rows]) for i in iters])
            ax.errorbar(iters, m, yerr=se, marker="o", markersize=3, capsize=2, color=method.colour, lw=width,
                        label=label)
        temps = sorted({r["temperature"] for rs in curves.values() for r in rs})
        (x, xe), (y, ye) = [zip(*[mean_and_se([r[k] for rs in curves.values() for r in rs if r["temperature"] == t])
                                  for t in temps]) for k in ("self_bleu", "accuracy_sample")]
        front_ax.errorbar(x, y, xerr=xe, yerr=ye, marker="o", markersize=4, capsize=2, color=method.colour, lw=width,
                          label=label)
    nll_ax.set(xlabel="fine-tuning iteration", ylabel="val nll per token (val split)",
               title="Held-out nll over fine-tuning")
    acc_ax.set(xlabel="fine-tuning iteration", ylabel="greedy accuracy (200 val problems)",
               title="Greedy accuracy over fine-tuning")
    front_ax.set(xlabel="Self-BLEU among a problem's 5 samples (lower = more diverse)",
                 ylabel="sampled accuracy (300 test problems)",
                 title=f"Test-split frontier (T = {TEMPERATURES.split(',')[0]} → {TEMPERATURES.split(',')[-1]}, "
                       "left to right)")
    front_ax.invert_xaxis()
    for ax in (nll_ax, acc_ax, front_ax):
        ax.grid(alpha=0.3)
    nll_ax.legend(fontsize=7.5, loc="upper right", title="every panel", title_fontsize=7.5)
    fig.suptitle("A pretrained base fine-tuned on 500 problems of 4 steps (Results §11)", fontsize=11)
    fig.text(0.5, 0.01, "Mean over seeds; bars: ±1 standard error over seeds (unpaired). The thick black line is "
             "the tuned MLE. The verdict (paired by seed) is in the tables.", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    return saved(plt, fig, folder, "shift.png")


def plot_reward_sites(folder: str = "figures") -> str | None:
    """figures/reward_sites.png: each method's mean reward per token at the answer's tokens and
    elsewhere, for its right and its wrong samples (lab.reward_sites), one dot per seed."""
    found = reward_sites()
    if not found:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(REWARD_METHODS)
    for i, method in enumerate(REWARD_METHODS):
        runs = [found["runs"][method.name(s)] for s in REWARD_SEEDS if method.name(s) in found["runs"]]
        for j, site in enumerate(SITES):
            values = [r[site] for r in runs if r[site] is not None]
            x = j + (i - (len(REWARD_METHODS) - 1) / 2) * width
            m, se = mean_and_se(values)
            ax.bar(x, m, width * 0.9, yerr=se, capsize=3, color=method.colour, alpha=0.8,
                   label=f"{method.label} ({len(values)} seeds)" if j == 0 else None)
            ax.scatter([x] * len(values), values, s=10, color="black", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(SITES)), [s.replace(", ", "\n") + " samples" for s in SITES])
    ax.set_ylabel("mean extracted reward r_t per token")
    ax.set_title(f"Where the reward sits: the answer's tokens (after ####) and the rest, right and wrong samples\n"
                 f"({found['problems']} test problems × {found['samples']} samples at T = 1; dots: seeds; bars: "
                 "±1 s.e.)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return saved(plt, fig, folder, "reward_sites.png")
