"""The experiments (experiments.py, lab/): the statistics and tables built from run folders, on a
few fake results in tmp_path, so the Results tables cannot silently change meaning; and the runner,
on fake scripts that save checkpoints (no training): bases, failures, provenance."""

import json
import math
import os
import subprocess
import sys
import time

import pytest

import experiments
from lab import null_reason, registry, results, runner, stats, tables
from lab.registry import Method


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """results/ and runs/ in tmp_path."""
    monkeypatch.setattr(registry, "RESULTS", str(tmp_path))
    monkeypatch.setattr(registry, "RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_mean_se_is_the_mean_and_the_standard_error_of_the_mean():
    # mean 2, sample standard deviation 1 (n - 1 = 2 in the denominator), s.e. 1 / sqrt(3)
    assert stats.mean_se_text([1.0, 2.0, 3.0]) == f"2.000 ± {1 / math.sqrt(3):.3f}"
    assert stats.mean_se_text([0.5, 0.7]) == "0.600 ± 0.100"
    assert stats.mean_se_text([0.25]) == "0.250"                       # one seed: no error bar
    assert stats.mean_se_text([None, float("nan"), 4.0]) == "4.000"   # missing values left out
    assert stats.mean_se_text([]) == "n/a"


def fake_run(root, name, metrics, td=(9.0, 0.5)):
    folder = root / name
    folder.mkdir(parents=True)
    result = {"accuracy_greedy": 0.5, "accuracy_sample": 0.25, "accuracy_beam": 0.5, "self_bleu": 0.7,
              "self_bleu_correct": None, "distinct_2": 0.4, "reward_spearman": 0.3, "nll": 0.2, "temperature": 1.0,
              **metrics}
    (folder / "eval.json").write_text(json.dumps(result))
    log = [{"iter": 100 * (i + 1), "val_nll": 1.0 - 0.1 * i, "val_td": td[i], "val_entropy": 0.3,
            "accuracy": 0.1 * i, "update_ms": 100.0 + i, "sample_ms": 0.0} for i in range(len(td))]
    (folder / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))


def test_table_averages_over_seeds_and_skips_missing_runs(kept):
    tmp_path = kept
    for seed, greedy in zip((1, 2, 3), (0.4, 0.5, 0.6)):
        fake_run(tmp_path, f"mle_s{seed}", {"accuracy_greedy": greedy, "accuracy_beam": greedy + 0.1})
    fake_run(tmp_path, "iq_s2", {"accuracy_greedy": 0.3}, td=(5.0, 0.25))
    text = tables.table([("MLE", Method("mle", ())), ("IQ", Method("iq", ())), ("absent", Method("nothing", ()))],
                             ("accuracy_greedy", "beam_minus_greedy", "val_td", "self_bleu_correct"))
    lines = text.splitlines()
    assert lines[0] == "| run | accuracy_greedy | beam_minus_greedy | val_td | self_bleu_correct |"
    assert lines[1] == "|---|---|---|---|---|"
    # s.e. of 0.4, 0.5, 0.6: 0.1 / sqrt(3); beam - greedy is 0.1 in every seed; val_td from the
    # last log line; a metric every seed lacks is n/a
    assert lines[2] == f"| MLE (3 seeds) | 0.500 ± {0.1 / math.sqrt(3):.3f} | 0.100 ± 0.000 | 0.500 ± 0.000 | n/a |"
    assert lines[3] == "| IQ (1 seeds) | 0.300 | 0.200 | 0.250 | n/a |"
    assert len(lines) == 4  # the run with no results is left out


def test_load_reads_the_last_log_line_and_averages_timings(kept):
    fake_run(kept, "run_s1", {"accuracy_sample": 0.1}, td=(9.0, 4.0, 2.0))
    r = results.load("run_s1")
    assert r["val_td"] == 2.0 and r["update_ms"] == pytest.approx(101.0)
    assert r["beam_minus_sample"] == pytest.approx(0.4)
    assert r["curve"] == {100: 0.0, 200: 0.1, 300: pytest.approx(0.2)}
    assert results.load("run_s2") is None


def test_every_run_that_starts_from_a_checkpoint_names_a_planned_run():
    bases = {run.base for run in registry.ALL_RUNS.values()} - {None}
    assert bases and all(registry.ALL_RUNS[b.name] == b and b.base is None for b in bases)  # bases from scratch
    for run in registry.ALL_RUNS.values():   # --init_from is the base's checkpoint, of the same seed
        start = run.flags[run.flags.index("--init_from") + 1] if "--init_from" in run.flags else None
        assert start == (os.path.join("runs", run.base.name, "ckpt.pt") if run.base else None)
        if run.base:   # §11 fine-tunes every seed from one base
            assert run.base.name.endswith("_s1" if run.name.startswith("shift_") else run.name[run.name.rindex("_s"):])


def test_accuracy_at_matched_self_bleu_interpolates_and_pairs_by_seed():
    # One method's curve through three temperatures: (Self-BLEU, accuracy) = (0.8, 0.4), (0.7, 0.3), (0.6, 0.1)
    rows = [{"temperature": t, "self_bleu": b, "accuracy_sample": a} for t, b, a in
            [(0.5, 0.8, 0.4), (1.0, 0.7, 0.3), (1.3, 0.6, 0.1)]]
    assert stats.accuracy_at(rows, 0.75) == pytest.approx(0.35)
    assert stats.accuracy_at(rows, 0.65) == pytest.approx(0.2)
    assert stats.accuracy_at(rows, 0.7) == pytest.approx(0.3)
    assert stats.accuracy_at(rows, 0.85) is None and stats.accuracy_at(rows, 0.55) is None
    # the baseline is 0.05 lower everywhere for seed 1 and 0.15 for seed 2; seed 3 has no baseline
    lower = lambda d: [{**r, "accuracy_sample": r["accuracy_sample"] - d} for r in rows]
    diffs = stats.paired_difference({1: rows, 2: rows, 3: rows}, {1: lower(0.05), 2: lower(0.15)}, 0.75)
    assert diffs == [pytest.approx(0.05), pytest.approx(0.15)]
    assert stats.paired_difference({1: rows}, {1: lower(0.05)}, 0.9) == []  # outside: no extrapolation


# ----------------------------------------------------------------------------------------------
# The 95% interval and the one rule that turns it into words

def test_t_interval_on_a_hand_computed_case():
    # 0.01, 0.03, 0.05: mean 0.03, sample sd 0.02, s.e. 0.02 / sqrt(3) = 0.0115470; t(0.975, 2 df) =
    # 4.3026527, so the half-width is 4.3026527 x 0.0115470 = 0.0496828
    m, se, low, high = stats.t_interval([0.01, 0.03, 0.05])
    assert m == pytest.approx(0.03) and se == pytest.approx(0.0115470, abs=1e-7)
    assert low == pytest.approx(-0.0196828, abs=1e-7) and high == pytest.approx(0.0796828, abs=1e-7)
    # two values, 1 df: t = 12.7062047, s.e. = |a - b| / 2
    assert stats.t_interval([0.1, 0.3])[2:] == pytest.approx((0.2 - 1.27062047, 0.2 + 1.27062047))
    assert stats.t_interval([0.5]) is None and stats.t_interval([None, 0.5]) is None


def test_t_quantiles_are_students_to_the_last_digits():
    # 15-digit values of the 0.975 quantile (R's qt(0.975, df)), an independent computation
    published = {1: 12.7062047361747, 2: 4.30265272974946, 3: 3.18244630528371, 4: 2.77644510519779,
                 9: 2.26215716279820, 30: 2.04227245630124}
    for df, t in published.items():
        assert stats.t_975(df) == pytest.approx(t, abs=1e-12)
    # and the CDF it inverts: P(|T| < 1) with 1 df is 1/2 (Cauchy), with 2 df 1/sqrt(3)
    assert stats.t_within(1.0, 1) == pytest.approx(0.5) and stats.t_within(1.0, 2) == pytest.approx(3 ** -0.5)


@pytest.mark.parametrize("low, high, sign, word", [
    (0.01, 0.05, 1, "holds"), (-0.05, -0.01, 1, "does not hold"), (-0.01, 0.05, 1, "within noise"),
    (-0.05, -0.01, -1, "holds"), (0.01, 0.05, -1, "does not hold"), (-0.05, 0.0, -1, "within noise")])
def test_claim_word_follows_the_rule(low, high, sign, word):
    assert stats.claim_word(low, high, sign) == word


def test_paired_table_gives_the_interval_and_the_word_of_the_rule(kept):
    tmp_path = kept
    greedy = {"mle": (0.50, 0.60, 0.70), "up": (0.60, 0.72, 0.78), "noisy": (0.55, 0.55, 0.70),
              "down": (0.30, 0.38, 0.52)}
    for prefix, values in greedy.items():
        for seed, g in enumerate(values, start=1):
            fake_run(tmp_path, f"{prefix}_s{seed}", {"accuracy_greedy": g, "self_bleu": g})
    m = {prefix: Method(prefix, ()) for prefix in greedy}
    text = tables.paired_table([(p, m[p], m["mle"]) for p in ("up", "noisy", "down")],
                                    ("accuracy_greedy", "self_bleu"))
    lines = text.splitlines()
    assert lines[0] == "| paired difference | accuracy_greedy (claim > 0) | self_bleu (claim < 0) |"
    # up: differences 0.10, 0.12, 0.08, mean 0.10, s.e. 0.02 / sqrt(3), interval 0.10 ± 4.303 x 0.011547
    assert lines[2].startswith("| up | +0.100 ± 0.012 [+0.050, +0.150] (n = 3): holds |")
    assert lines[2].endswith("[+0.050, +0.150] (n = 3): does not hold |")   # higher Self-BLEU: less diverse
    assert "(n = 3): within noise" in lines[3].split("|")[2]                   # 0.05, -0.05, 0.00
    assert lines[4].split("|")[2].strip().endswith("does not hold")           # -0.20, -0.22, -0.18
    assert lines[4].split("|")[3].strip().endswith(": holds")


def test_tables_use_every_seed_that_exists(kept):
    tmp_path = kept
    for seed in (1, 2, 3, 4, 5):
        fake_run(tmp_path, f"mle_s{seed}", {"accuracy_greedy": 0.1 * seed})
    fake_run(tmp_path, "mle2_s7", {})                  # another run whose name starts the same
    (tmp_path / "mle_s9").mkdir()                      # no evaluation yet
    assert results.seeds_of(Method("mle", ())) == [1, 2, 3, 4, 5]
    assert "| MLE (5 seeds) | 0.300 ± " in tables.table([("MLE", Method("mle", ()))], ("accuracy_greedy",))


# ----------------------------------------------------------------------------------------------
# Provenance: run.json

def test_provenance_prints_a_kept_runs_record_and_reads_nothing_outside_results(kept, capsys):
    (kept / "gamma0.9_lam0.1_s2").mkdir()
    runner.write_provenance("gamma0.9_lam0.1_s2", {"train_command": "python train.py --gamma 0.9"})
    assert experiments.main(["--provenance", "gamma0.9_lam0.1_s2"]) == 0
    assert "--gamma 0.9" in capsys.readouterr().out
    (kept / "outside.json").write_text("{}")
    for name in ("../outside.json", "/etc", "..", "gamma0.9_lam0.1_s2/../..", "absent"):
        assert experiments.main(["--provenance", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith("experiments.py: error: no run.json for") and err.count("\n") == 1


def test_a_run_records_its_machine_its_load_and_commands(kept):
    (kept / "quickstart_lam0").mkdir()
    runner.write_provenance("quickstart_lam0", {"train_command": "python train.py --lambda 0", "train_seconds": 783.0,
                                                "threads": 2})
    facts = json.loads((kept / "quickstart_lam0" / "run.json").read_text())
    assert facts["name"] == "quickstart_lam0"
    # The README's commands run as a user runs them, on every core; the experiments one thread each.
    assert registry.ALL_RUNS["quickstart_lam0"].threads == os.cpu_count()
    assert registry.ALL_RUNS["sweep_lam0_s1"].threads == 1
    assert facts["cpu"] and facts["torch"] and len(facts["commit"]) in (40, len("unknown"))
    assert len(facts["load_average_at_end"]) == 3 and facts["platform"]
    fake_run(kept, "quickstart_lam0.5", {"accuracy_beam": 0.58, "self_bleu": 0.641}, td=(0.5, 0.07))
    # quickstart_lam0 has a run.json but no evaluation: only the λ = 0.5 row
    table = tables.quickstart_table().splitlines()
    assert table[4] == "| `python train.py --lambda 0.5` | 0.100 | 0.900 | unknown | 0.580 | 0.641 |"
    assert len(table) == 5 or table[5] == ""


def test_busy_processes_names_another_process_that_keeps_a_core_busy():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert f"(pid {busy.pid})" in " ".join(runner.busy_processes())
    finally:
        busy.kill()
        busy.wait()
    assert f"(pid {busy.pid})" not in " ".join(runner.busy_processes())


# ----------------------------------------------------------------------------------------------
# The reason for the null: KL to a tempered MLE

def test_tempered_kl_finds_the_temperature_a_policy_was_made_with():
    torch = pytest.importorskip("torch")
    reference = torch.randn(200, 30, generator=torch.Generator().manual_seed(0)) * 3
    kl = null_reason.tempered_kl(reference / 1.5, reference)   # the policy IS the reference at T = 1.5
    best = min(range(len(kl)), key=kl.__getitem__)
    assert null_reason.KL_TEMPERATURES[best] == 1.5 and kl[best] == pytest.approx(0.0, abs=1e-9)
    assert kl[null_reason.KL_TEMPERATURES.index(1.0)] > 0.01


def test_null_reason_report_pairs_each_policy_with_the_floor_of_its_seed(kept):
    tmp_path = kept
    pair = lambda policy, run, ref, t1, kmin, same=False: {
        "policy": policy, "run": run, "reference": ref, "same_seed": same, "kl_at_T1": t1, "kl_min": kmin, "best_T": 1.2}
    recipe, mle = "recipe (λ = 0.1, γ = 0.9)", "MLE"
    pairs = [pair(mle, "sweep_lam0_s1", "sweep_lam0_s2", 0.09, 0.08), pair(mle, "sweep_lam0_s2", "sweep_lam0_s1", 0.10, 0.09),
             pair(recipe, "gamma0.9_lam0.1_s1", "sweep_lam0_s2", 0.20, 0.11),
             pair(recipe, "gamma0.9_lam0.1_s2", "sweep_lam0_s1", 0.20, 0.13)]
    (tmp_path / "null_reason").mkdir()
    (tmp_path / "null_reason" / "kl.json").write_text(json.dumps(
        {"seeds": [1, 2], "temperatures": [0.5, 3.0], "positions": 7, "pairs": pairs,
         "log_checks": [{"name": "sweep_lam0_s1", "log_equal": True}]}))
    text = null_reason.null_reason_report()
    recipe_row = next(line for line in text.splitlines() if line.startswith(f"| {recipe}"))
    # paired differences 0.11 - 0.08 = 0.03 and 0.13 - 0.09 = 0.04: mean 0.035, s.e. 0.005, 1 df
    assert recipe_row.endswith("| +0.0350 ± 0.0050 [−0.0285, +0.0985] (n = 2): within noise |")
    assert "1 of 1 logs equal" in text


def test_machine_names_the_changed_files_whole(monkeypatch):
    answers = {"status": " M experiments.py\nM  train.py", "rev-parse": "0" * 40}
    monkeypatch.setattr(runner, "git", lambda *args: answers[args[0]])
    facts = runner.machine()
    assert facts["uncommitted_changes"] == ["experiments.py", "train.py"] and facts["commit"] == "0" * 40


# ----------------------------------------------------------------------------------------------
# GAIL in the fine-tuning protocol

def test_gail_runs_are_gail_py_runs_from_the_protocols_mle_bases():
    import gail
    from runtime import parse_config
    groups = registry.GROUPS
    gail_runs = [run for run in groups["gail"].runs + groups["gail_controls"].runs if run.script == "gail.py"]
    assert len(gail_runs) == 4 * len(registry.SEEDS)   # GAIL, its control, and both without the MLE loss
    for run in gail_runs:
        assert run.name.startswith("gail") and run.base == registry.MLE.run(int(run.name.rsplit("_s", 1)[1]))
        c, _ = parse_config(gail.GailConfig, list(run.flags), "gail.py", "")   # every flag is gail.py's own
        assert c.shuffle_rewards == ("shuffled" in run.name) and c.mle_weight == (0.0 if "mle0" in run.name else 1.0)
    # the frontier's fine-tuned runs are the protocol's own, trained by train.py with the same flags
    recipe = registry.FINETUNED_HEAD_RECIPE.run(2)
    assert recipe in groups["gail"].runs and recipe in groups["gail_frontier"].runs and recipe.script == "train.py"
    assert registry.FINETUNED[0.0].run(2) in groups["gail_frontier"].runs and groups["value_head"].runs
    assert recipe.flags[recipe.flags.index("--lambda"):] == ("--lambda", "0.1", "--gamma", "0.9", "--value_head")


def test_stability_is_the_largest_fall_below_the_mle_base(kept):
    for name, accuracies in (("sweep_lam0_s1", [0.3, 0.6]), ("sweep_lam0_s2", [0.5, 0.5]),
                             ("gail_mle0_s1", [0.55, 0.45, 0.62]), ("gail_mle0_s2", [0.52, 0.51, 0.5])):
        fake_run(kept, name, {}, td=tuple(range(len(accuracies))))
        log = [{"iter": 100 * (i + 1), "val_nll": 1.0, "val_entropy": 0.3, "accuracy": a, "disc_accuracy": 0.5,
                "update_ms": 1.0, "sample_ms": 1.0} for i, a in enumerate(accuracies)]
        (kept / name / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    # base: the from-scratch run's last evaluation (0.6); the worst evaluation 0.45 is 0.15 below it
    assert results.largest_fall(registry.GAIL_NO_MLE, 1) == pytest.approx(0.15)
    assert results.largest_fall(registry.GAIL_NO_MLE, 2) == pytest.approx(0.0)   # 0.5 - 0.5: never fell
    row = next(line for line in tables.gail_report().splitlines()
               if line.startswith("| GAIL without the MLE") and "s1:" in line)   # the stability table's row
    assert row.endswith("| 1 of 2 |") and "s1: +0.150, s2: +0.000" in row


def test_a_second_evaluation_keeps_the_first_runs_provenance(kept):
    fake_run(kept, "finetune_lam0_s1", {})
    runner.write_provenance("finetune_lam0_s1", {"sample_command": "first"})
    runner.write_provenance("finetune_lam0_s1", {"sample_command": "frontier", "log_equals_kept": True}, "frontier.json")
    facts = json.loads((kept / "finetune_lam0_s1" / "run.json").read_text())
    assert facts["sample_command"] == "first"
    assert facts["frontier.json"]["sample_command"] == "frontier" and facts["frontier.json"]["log_equals_kept"]


def test_a_retrained_log_reproduces_the_kept_one_on_every_number_the_kept_one_has(kept):
    logged = [{"iter": 100, "val_nll": 0.5, "accuracy": 0.3, "update_ms": 10.0},
              {"iter": 200, "val_nll": 0.4, "accuracy": 0.4, "update_ms": 11.0}]

    def check(retrained):
        for root, log in ((kept, logged), (kept / "runs", retrained)):
            (root / "r_s1").mkdir(parents=True, exist_ok=True)
            (root / "r_s1" / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
        return runner.same_log("r_s1")["log_equal"]

    # other timings and a key logged only since are not differences
    assert check([{**e, "update_ms": 99.0, "val_value_mean": 3.0} for e in logged])
    assert not check([logged[0], {**logged[1], "accuracy": 0.405}])   # one number changed
    assert not check(logged[:1])                                        # an evaluation missing
    assert not check([{k: v for k, v in e.items() if k != "val_nll"} for e in logged])   # a kept number missing


# ----------------------------------------------------------------------------------------------
# The runner, on fake scripts: train.py and gail.py save a real checkpoint file at their last
# iteration (or at `stop_at[name]`, as a run stopped early would), sample.py prints one JSON line.

@pytest.fixture
def scripts(kept, monkeypatch):
    torch = pytest.importorskip("torch")
    ran, stop_at, fail, real = [], {}, {}, subprocess.run

    def run(command, **options):
        if command[0] != sys.executable:
            return real(command, **options)
        script, flags = command[1], command[2:]
        out = flags[flags.index("--out_dir") + 1]
        name = os.path.basename(out)
        ran.append((script, name, flags))
        time.sleep(0.2)   # long enough for two jobs to overlap
        if name in fail:
            print(fail[name], file=options["stdout"], flush=True)   # what the script prints before it exits 2
            return subprocess.CompletedProcess(command, 2)
        if script == "sample.py":
            return subprocess.CompletedProcess(command, 0, stdout='{"temperature": 1.0}\n', stderr="")
        total = int(flags[flags.index("--max_iters") + 1])
        os.makedirs(out, exist_ok=True)
        shape = {"vocab_size": 2, "block_size": 2, "n_layer": 1, "n_head": 1, "n_embd": 2}  # (a checkpoint's schema)
        torch.save({"model": {}, "model_args": shape, "config": {}, "vocab": {"gpt2_ids": None, "padded": True},
                    "iter_num": stop_at.get(name, total)}, os.path.join(out, "ckpt.pt"))
        with open(os.path.join(out, "log.jsonl"), "a") as f:
            f.write(json.dumps({"iter": total}) + "\n")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runner.subprocess, "run", run)
    monkeypatch.setattr(runner, "busy_processes", lambda: [])
    return ran, stop_at, fail


def test_a_resumed_run_records_the_planned_command_and_the_one_that_resumed_it(scripts, kept):
    ran, stop_at, _ = scripts
    run = registry.Run("gail_mle0_s2", "gail.py", ("--max_iters", "400", "--seed", "2", "--mle_weight", "0"))
    stop_at["gail_mle0_s2"] = 150   # a stop signal saved it at iteration 150
    fresh = runner.train_run(run)
    out = str(kept / "runs" / "gail_mle0_s2")
    assert ran[-1] == ("gail.py", "gail_mle0_s2", [*run.flags, "--out_dir", out])
    assert fresh["train_command"] == "python gail.py " + " ".join(ran[-1][2]) and fresh["train_resumed"] is False
    del stop_at["gail_mle0_s2"]
    resumed = runner.train_run(run)
    assert ran[-1][2] == ["--resume", "--max_iters", "400", "--out_dir", out]
    assert resumed["train_command"] == fresh["train_command"] and resumed["train_resumed"] is True
    assert resumed["resumed_with"] == "python gail.py " + " ".join(ran[-1][2])
    assert runner.train_run(run) == {"train_command": fresh["train_command"], "already_trained_to": 400}
    assert len(ran) == 2   # a finished run is not started again


def test_an_unfinished_base_is_trained_to_its_end_first_and_refused_if_it_stays_unfinished(scripts, kept):
    ran, stop_at, _ = scripts
    base, finetune = registry.MLE.run(1), registry.FINETUNED[0.5].run(1)
    stop_at[base.name] = 5   # interrupted at iteration 5 of 1200
    runner.train_run(base)
    with pytest.raises(runner.UserError, match=r"sweep_lam0_s1 is unfinished \(iteration 5 of 1200\)"):
        runner.train_run(finetune)   # the base's resume stopped again at 5: the fine-tune does not start
    assert [(script, name, flags[0]) for script, name, flags in ran] == [("train.py", base.name, "--n_embd"),
                                                                          ("train.py", base.name, "--resume")]
    del stop_at[base.name]
    facts = runner.train_run(finetune)
    assert [name for _, name, _ in ran[2:]] == [base.name, finetune.name]   # resumed to the end, then fine-tuned
    assert facts["base"] == base.name and facts["base_iteration"] == 1200


def test_two_fine_tunes_of_one_seed_train_their_base_once(scripts, kept):
    ran, _, _ = scripts
    group = registry.Group(registry.EVAL, [registry.FINETUNED[0.0].run(1), registry.FINETUNED[0.5].run(1)])
    runner.run_group(group, jobs=2)
    assert [name for _, name, _ in ran if name == "sweep_lam0_s1"] == ["sweep_lam0_s1"]
    for run in group.runs:
        facts = json.loads((kept / run.name / "run.json").read_text())
        assert facts["base_iteration"] == 1200 and facts["side_by_side"] == 2 and len(facts["load_average_at_start"]) == 3


def test_a_second_evaluation_of_a_finished_run_does_not_claim_its_log_was_reproduced(scripts, kept):
    ran, _, _ = scripts
    run = registry.FINETUNED[0.0].run(1)
    trainings = lambda: [name for script, name, _ in ran if script == "train.py"]
    runner.train_and_evaluate(run, registry.EVAL)               # trained and evaluated: eval.json
    trained = trainings()
    runner.train_and_evaluate(run, registry.FRONTIER_EVAL)      # evaluated a second way, not retrained
    assert trainings() == trained
    facts = json.loads((kept / run.name / "run.json").read_text())
    assert facts["frontier.json"]["log_equals_kept"].startswith("not retrained")


def test_a_failed_run_is_its_scripts_one_line_reason(scripts, kept, capsys, monkeypatch):
    _, _, fail = scripts
    fail["quickstart_lam0.5"] = "train.py: error: --lambda must be at least 0"
    assert experiments.main(["--only", "quickstart", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("experiments.py: error: quickstart_lam0.5: `python train.py` exited 2: "
                   "train.py: error: --lambda must be at least 0\n")
    assert "quickstart_lam0" not in [p.name for p in kept.iterdir()]   # the second run was not begun


def test_bad_flags_and_a_damaged_result_are_one_line(kept, capsys):
    for argv in (["--jobs", "0"], ["--jobs", "-1"], ["--only", "nothing"]):
        with pytest.raises(SystemExit) as stop:
            experiments.main(argv)
        assert stop.value.code == 2 and "experiments.py: error: " in capsys.readouterr().err.splitlines()[-1]
    fake_run(kept, "finetune_lam0_s1", {})
    (kept / "finetune_lam0_s1" / "eval.json").write_text('{"temperature": 1.0, "accuracy_gr')   # cut off mid-write
    assert experiments.main(["--report", "--only", "value_head"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("experiments.py: error: ") and "finetune_lam0_s1/eval.json is damaged" in err
    assert err.count("\n") == 1


def test_the_tuned_mle_of_section_11_is_the_rule_s_pick_from_the_kept_tuning_logs():
    from lab import tables
    choice = tables.tuned_choice()   # from results/, as kept
    if choice is None:
        pytest.skip("the tuning grid's logs are not in results/")
    (prefix, iteration), _ = choice
    picked = next(m for m in registry.SHIFT_MLE_GRID.values() if m.prefix == prefix)
    tuned = registry.SHIFT_MLE_TUNED
    # the same flags but the stopping iteration, on the grid run's 600-iteration schedule
    assert tuned.run(3).max_iters == iteration and tuned.schedule[tuned.schedule.index("--lr_decay_iters") + 1] == "600"
    strip = lambda flags: [f for i, f in enumerate(flags) if "--max_iters" not in flags[max(i - 1, 0):i + 1]]
    assert strip(tuned.run(3).flags) == strip(picked.run(3).flags)
