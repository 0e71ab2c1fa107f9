"""Every run of the Results, each written once: a Method is one recipe over seeds (its name, script,
flags, the run it starts from, and its label and colour in the figures); a group is an evaluation
and a list of runs. Renaming a run is a one-line change here; the runner, tables and figures take
their names from these objects."""

import os
from dataclasses import dataclass

RUNS, RESULTS = "runs", "results"   # checkpoints (not kept in git); logs and evaluations (kept)
# The experiments use a narrower model than train.py's default (128 wide instead of 256): three
# times cheaper. Even so, all of them take many hours on two CPU cores (run.json: train_seconds).
MODEL = ("--n_embd", "128", "--n_head", "4")
ITERS = 1200           # iterations of a from-scratch run, as in the default recipe
SEEDS = (1, 2, 3)
FRONTIER_SEEDS = (1, 2, 3, 4, 5)
SCRATCH = MODEL + ("--max_iters", str(ITERS), "--eval_interval", "200")
FINETUNE = ("--max_iters", "400", "--eval_interval", "100", "--warmup_iters", "0", "--learning_rate", "5e-4",
            "--min_lr", "5e-5")
# The kept runs were trained on one padded pass of 32 problems a batch (train.py's --batch_chunks
# came later: the same loss, other rounding); pinned, a rerun reproduces their logs to the bit.
KEPT_BATCHES = ("--batch_size", "32", "--batch_chunks", "1")
RECIPE_FLAGS = ("--lambda", "0.1", "--gamma", "0.9")


@dataclass(frozen=True)
class Evaluation:
    """How a group's runs are evaluated: `sample.py --out_dir runs/<name> <flags>`, whose JSON lines
    are kept in results/<name>/<result_file>."""
    flags: tuple[str, ...]
    result_file: str = "eval.json"


EVAL = Evaluation(("--eval", "--json", "--num_problems", "200", "--num_samples", "5"))
QUICKSTART_EVAL = Evaluation(("--eval", "--json"))   # the README's `sample.py --eval`, as JSON
TEMPERATURES = "0.5,0.7,1.0,1.3"
FRONTIER_EVAL = Evaluation(EVAL.flags[:3] + ("300", "--num_samples", "5", "--temperature", TEMPERATURES),
                           "frontier.json")


@dataclass(frozen=True)
class Run:
    """One training: `python <script> <flags> --out_dir runs/<name>`, from the final checkpoint of
    the run `base` when there is one."""
    name: str
    script: str
    flags: tuple[str, ...]
    base: "Run | None" = None
    threads: int = 1      # runs side by side share the cores; the README's commands get them all

    @property
    def max_iters(self) -> int | None:
        return int(self.flags[self.flags.index("--max_iters") + 1]) if "--max_iters" in self.flags else None


@dataclass(frozen=True)
class Method:
    """One recipe over seeds: the run of seed s is <prefix>_s<s>, trained by `script` with
    schedule + --seed s + (--init_from the base's run of seed s) + flags. A method without a
    schedule is a README command, run once under its own name."""
    prefix: str
    flags: tuple[str, ...]
    schedule: tuple[str, ...] | None = SCRATCH
    base: "Method | None" = None
    script: str = "train.py"
    label: str = ""
    colour: str = "black"
    base_seed: int | None = None   # every seed starts from this seed's base run (None: its own seed's)

    def name(self, seed: int) -> str:
        return f"{self.prefix}_s{seed}"

    def run(self, seed: int | None = None) -> Run:
        if self.schedule is None:   # a README command, run as a user runs it: every core
            return Run(self.prefix, self.script, self.flags, threads=os.cpu_count() or 1)
        base = self.base.run(self.base_seed or seed) if self.base else None
        start = ("--init_from", os.path.join(RUNS, base.name, "ckpt.pt")) if base else ()
        pinned = KEPT_BATCHES if self.script == "train.py" else ()
        return Run(self.name(seed), self.script, (*self.schedule, *pinned, "--seed", str(seed), *start, *self.flags),
                   base)


def lam_name(x: float) -> str:
    return f"{x:g}"


def iq(lam: float, *extra: str, prefix: str = "sweep_lam", **kw) -> Method:
    """A method named for its λ (<prefix><λ>), with --lambda λ and the extra flags."""
    return Method(f"{prefix}{lam_name(lam)}", ("--lambda", lam_name(lam), *extra), **kw)


# The README's quick start: its two commands exactly (train.py's default model and flags).
QUICKSTART = [Method("quickstart_lam0.5", ("--lambda", "0.5"), None),
              Method("quickstart_lam0", ("--lambda", "0"), None)]
# The quick start's default over seeds, and a cheaper default (2/3 of the iterations at 1.5 times
# the learning rate) tried against it for a five-minute quick start (docs/performance.md).
CHEAPER_FLAGS = ("--max_iters", "800", "--learning_rate", "3e-3", "--min_lr", "3e-4", "--warmup_iters", "50")
DEFAULT = {lam: Method(f"default_lam{lam}", ("--lambda", lam), ()) for lam in ("0", "0.5")}
CHEAPER = {lam: Method(f"iters800_lam{lam}", ("--lambda", lam, *CHEAPER_FLAGS), ()) for lam in DEFAULT}
SWEEP = {0.0: iq(0.0, label="MLE"), 0.01: iq(0.01, label="IQLearn λ = 0.01", colour="#74c476"),
         0.1: iq(0.1, label="IQLearn λ = 0.1", colour="#41ab5d"),
         0.5: iq(0.5, label="IQLearn λ = 0.5", colour="#8c6d31")}
MLE = SWEEP[0.0]
RECIPE = Method("gamma0.9_lam0.1", RECIPE_FLAGS, label="IQLearn λ = 0.1, γ = 0.9 (recipe)", colour="#d62728")
HEAD = {0.1: iq(0.1, "--value_head", prefix="head_lam", label="λ = 0.1 + value head", colour="#fdae6b"),
        0.5: iq(0.5, "--value_head", prefix="head_lam", label="λ = 0.5 + value head", colour="#e6550d")}
HEAD_RECIPE = Method("head_gamma0.9_lam0.1", (*RECIPE_FLAGS, "--value_head"), label="recipe + value head",
                     colour="#9467bd")
ENTROPY_COEFS = (0.01, 0.03, 0.1)
ENTROPY = {c: Method(f"entropy{c:g}", ("--lambda", "0", "--entropy_coef", str(c)), label=f"MLE + entropy {c:g}",
                     colour=colour) for c, colour in zip(ENTROPY_COEFS, ("#9ecae1", "#4292c6", "#08519c"))}
# The paper's protocol: fine-tuning from each seed's MLE run (iteration 0 = its final checkpoint).
finetuned = lambda lam, *extra, prefix="finetune_lam", **kw: iq(lam, *extra, prefix=prefix, schedule=FINETUNE,
                                                                base=MLE, **kw)
FINETUNED = {0.0: finetuned(0.0, label="MLE, then MLE"), **{lam: finetuned(lam) for lam in (0.1, 0.5)}}
FINETUNED_HEAD = {0.1: finetuned(0.1, "--value_head", prefix="finetune_head_lam"),
                  0.5: finetuned(0.5, "--value_head", prefix="finetune_head_lam",
                                 label="MLE, then IQLearn λ = 0.5 + head", colour="#e6550d")}
FINETUNED_HEAD_RECIPE = Method("finetune_head_gamma0.9_lam0.1", (*RECIPE_FLAGS, "--value_head"), FINETUNE, MLE,
                               label="MLE, then the recipe + head", colour="#d62728")
# GAIL (gail.py takes the same flags) from the same MLE bases.
gail = lambda prefix, flags, label, colour: Method(prefix, flags, FINETUNE, MLE, "gail.py", label, colour)
GAIL = gail("gail_mle1", (), "MLE, then GAIL", "#3182bd")
GAIL_SHUFFLED = gail("gail_shuffled_mle1", ("--shuffle_rewards",), "GAIL, shuffled rewards", "#9ecae1")
GAIL_NO_MLE = gail("gail_mle0", ("--mle_weight", "0"), "GAIL without the MLE loss", "#756bb1")
GAIL_NO_MLE_SHUFFLED = gail("gail_shuffled_mle0", ("--shuffle_rewards", "--mle_weight", "0"),
                            "the same, shuffled rewards", "#bcbddc")


# The paper's regime in miniature (Results §11): one pretrained base (MLE on the built-in task at
# the sweep's settings, seed 1), fine-tuned on a small task it never saw: 500 problems drawn at 4
# steps (4 answer lines, 3 where the rate problem is solved the short way; the base saw 2-3),
# 38 epochs, with 48% of the problems holding a number token the base's vocabulary lacks (train.py grows it). train.py's val split
# (200 problems, logged every 50 iterations) tunes; the reported numbers are sample.py's on the
# test split (300 problems), which no run looks at while training or tuning.
SHIFT_BASE = Method("shift_base", ("--lambda", "0"))
SHIFT_TASK = ("--task_steps", "4", "--task_min_steps", "4", "--task_train", "500")
SHIFT_ITERS = 600
shift_schedule = lambda lr="5e-4", iters=SHIFT_ITERS: (
    *MODEL, "--max_iters", str(iters), "--lr_decay_iters", str(SHIFT_ITERS), "--eval_interval", "50",
    "--warmup_iters", "0", "--learning_rate", lr, "--min_lr", f"{float(lr) / 10:g}", *SHIFT_TASK)
SHIFT_EVAL = Evaluation(("--eval", "--json", "--split", "test", "--num_problems", "300", "--num_samples", "5",
                         "--temperature", TEMPERATURES), "frontier.json")
TUNING_EVAL = Evaluation(("--eval", "--json", "--num_problems", "200", "--num_samples", "1"))  # the val split


def shifted(prefix: str, flags: tuple[str, ...], label: str = "", colour: str = "black", lr: str = "5e-4",
            iters: int = SHIFT_ITERS, script: str = "train.py") -> Method:
    return Method(f"shift_{prefix}", flags, shift_schedule(lr, iters), SHIFT_BASE, script, label, colour, base_seed=1)


# MLE's tuning grid (learning rate, dropout, weight decay; the stopping iteration is read from
# each run's log): more configurations than IQLearn gets. lr 5e-4 is the protocol's, untuned.
SHIFT_MLE_GRID = {(lr, drop, wd): shifted(f"mle_lr{lr}" + (f"_drop{drop}" if drop != "0" else "")
                                          + (f"_wd{wd}" if wd != "0.1" else ""),
                                          ("--lambda", "0", "--dropout", drop, "--weight_decay", wd), lr=lr)
                  for lr, drop, wd in (("5e-4", "0", "0.1"), ("1e-4", "0", "0.1"), ("2e-4", "0", "0.1"),
                                       ("5e-4", "0.2", "0.1"), ("2e-4", "0.2", "0.1"), ("5e-4", "0", "0.5"),
                                       ("1e-3", "0", "0.1"), ("2e-3", "0", "0.1"))}
SHIFT_MLE = shifted("mle_lr5e-4", ("--lambda", "0", "--dropout", "0", "--weight_decay", "0.1"),
                    "MLE, untuned (the protocol's settings)", "#969696")
SHIFT_IQ = [shifted("recipe_head", (*RECIPE_FLAGS, "--value_head"), "recipe + value head", "#9467bd"),
            shifted("lam0.5_head", ("--lambda", "0.5", "--value_head"), "λ = 0.5 + value head", "#e6550d"),
            shifted("recipe", RECIPE_FLAGS, "IQLearn λ = 0.1, γ = 0.9 (recipe)", "#d62728"),
            shifted("lam0.01", ("--lambda", "0.01"), "IQLearn λ = 0.01", "#74c476")]
# tables.tuned_choice's pick from the grid's logs (a test checks it): weight decay 0.5, stopped at
# iteration 450 of the 600-iteration schedule.
SHIFT_MLE_TUNED = shifted("mle_tuned", ("--lambda", "0", "--dropout", "0", "--weight_decay", "0.5"),
                          "MLE, tuned (weight decay 0.5, stopped at 450)", "black", iters=450)
SHIFT_OTHERS = [shifted("entropy0.01", ("--lambda", "0", "--entropy_coef", "0.01"), "MLE + entropy 0.01", "#4292c6"),
                shifted("gail", (), "GAIL (+ MLE loss)", "#8c564b", script="gail.py")]

SHIFT_METHODS = [SHIFT_MLE_TUNED, SHIFT_MLE, *SHIFT_IQ, *SHIFT_OTHERS]


def by_seed(methods: list[Method], seeds: tuple[int, ...] = SEEDS) -> list[Run]:
    """Seed by seed, every method of the seed: an interrupted group leaves whole seeds."""
    return [m.run(s) for s in seeds for m in methods]


def by_method(methods: list[Method], seeds: tuple[int, ...] = SEEDS) -> list[Run]:
    """Method by method, each through all its seeds: an interrupted group leaves whole methods."""
    return [m.run(s) for m in methods for s in seeds]


@dataclass(frozen=True)
class Group:
    evaluation: Evaluation
    runs: list[Run]


# The frontier compares methods from scratch across sampling temperatures; MLE and the recipe get
# more seeds, since their difference is the verdict, as does λ = 0.01 (it looked positive on 2
# seeds, as the recipe had). The order is the order of importance.
FRONTIER_RUNS = (by_seed([MLE, RECIPE], FRONTIER_SEEDS) + by_method([HEAD_RECIPE, *ENTROPY.values(), SWEEP[0.5]])
                 + by_method([SWEEP[0.01]], FRONTIER_SEEDS) + by_method([SWEEP[0.1], *HEAD.values()]))
GROUPS = {
    "quickstart": Group(QUICKSTART_EVAL, [m.run() for m in QUICKSTART]),
    "quickstart_seeds": Group(QUICKSTART_EVAL, by_seed([*DEFAULT.values(), *CHEAPER.values()], (1, 2))),
    # The protocol with and without a value head (its from-scratch runs are in the frontier).
    "value_head": Group(EVAL, by_seed([FINETUNED[0.0], FINETUNED[0.1], FINETUNED[0.5], *FINETUNED_HEAD.values(),
                                       FINETUNED_HEAD_RECIPE])),
    "frontier": Group(FRONTIER_EVAL, FRONTIER_RUNS),
    # GAIL after the IQLearn it is compared with that the value-head group does not already evaluate.
    "gail": Group(EVAL, by_method([FINETUNED_HEAD_RECIPE, GAIL, GAIL_SHUFFLED, GAIL_NO_MLE])),
    # MLE -> MLE, -> IQLearn (λ = 0.5 + head; the recipe + head), -> GAIL, across temperatures
    "gail_frontier": Group(FRONTIER_EVAL, by_method([FINETUNED[0.0], FINETUNED_HEAD[0.5], GAIL,
                                                     FINETUNED_HEAD_RECIPE])),
    "gail_controls": Group(EVAL, by_method([GAIL_NO_MLE_SHUFFLED])),
    # the base (evaluated on its own task) and MLE's tuning runs (on the shifted task's val split)
    "shift_tuning": Group(TUNING_EVAL, [SHIFT_BASE.run(1), *by_seed(list(SHIFT_MLE_GRID.values()), (1, 2))]),
    "shift": Group(SHIFT_EVAL, by_seed([SHIFT_MLE_TUNED, SHIFT_MLE, *SHIFT_IQ[:2]], FRONTIER_SEEDS)
                   + by_seed(SHIFT_IQ[2:]) + by_seed(SHIFT_OTHERS)),
}
ALL_RUNS = {run.name: run for group in GROUPS.values() for run in group.runs}
