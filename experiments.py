"""Rerun the Results (docs/results.md): every experiment with train.py and `sample.py --eval`, then
print the tables (markdown) from what the runs left behind.

    python experiments.py                  # everything (hours on 2 CPU cores)
    python experiments.py --only shift_tuning,shift  # one or more groups; finished runs are skipped
    python experiments.py --only disc_ceiling,reward_sites   # Results §11's two measurements
    python experiments.py --only quickstart          # the README quick start's two commands
    python experiments.py --only quickstart_seeds    # its default over seeds, and a cheaper one
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
import os
import sys

from errors import Parser, UserError
from lab.registry import GROUPS
from lab.runner import provenance, run_group

MEASUREMENTS = ("null_reason", "disc_ceiling", "reward_sites")   # lab/<name>.py: measurements, not registry runs


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="experiments.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated groups: " + ", ".join([*GROUPS, *MEASUREMENTS]))
    parser.add_argument("--report", action="store_true", help="print the tables only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side (1 or more)")
    parser.add_argument("--plot", action="store_true", help="also draw figures/*.png (needs matplotlib)")
    parser.add_argument("--provenance", metavar="NAME", help="print results/NAME/run.json: how, where, which code")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else [*GROUPS, *MEASUREMENTS]
    if unknown := [group for group in chosen if group not in GROUPS and group not in MEASUREMENTS]:
        parser.error(f"unknown group {unknown[0]}")
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    try:
        if args.provenance:
            print(provenance(args.provenance))
        else:
            run_and_report(chosen, args)
    except UserError as e:
        print(f"experiments.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_and_report(chosen: list[str], args: argparse.Namespace) -> None:
    from lab import tables
    from lab.disc_ceiling import disc_ceiling_report, measure_disc_ceiling
    from lab.null_reason import measure_null_reason, null_reason_report
    from lab.reward_sites import measure_reward_sites, reward_sites_report
    measurements = {"null_reason": (measure_null_reason, null_reason_report),
                    "disc_ceiling": (measure_disc_ceiling, disc_ceiling_report),
                    "reward_sites": (measure_reward_sites, reward_sites_report)}
    if not args.report:
        for group in chosen:  # a run that starts from another trains that one first, wherever it is
            measurements[group][0]() if group in measurements else run_group(GROUPS[group], args.jobs)
    if "quickstart" in chosen:
        print(tables.quickstart_table() + "\n")
    if "quickstart_seeds" in chosen:
        print(tables.defaults_report() + "\n")
    if set(chosen) & {"frontier", "value_head"}:
        tables.report_frontier()
    if "null_reason" in chosen:
        print(null_reason_report())
    if set(chosen) & {"gail", "gail_frontier", "gail_controls"}:
        print("### GAIL against IQLearn: MLE, then 400 iterations of fine-tuning\n\n" + tables.gail_report())
    if set(chosen) & {"shift", "shift_tuning"}:
        print("### The paper's regime: a pretrained base, fine-tuned on a small shifted task\n\n" + tables.shift_report())
    for name in ("disc_ceiling", "reward_sites"):
        if name in chosen:
            print(measurements[name][1]())
    if args.plot:
        from lab.figures import plot_figures, plot_gail, plot_reward_sites, plot_shift
        paths = [*plot_figures(), plot_gail(), plot_shift(), plot_reward_sites()]
        print("\n".join(f"wrote {path}" for path in paths if path))


if __name__ == "__main__":
    sys.exit(main())
