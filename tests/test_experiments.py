"""experiments.py's reporting: mean ± standard error and the table built from run folders, on a
few fake results in tmp_path (no training), so the Results tables cannot silently change meaning."""

import json
import math

import pytest

import experiments


def test_mean_se_is_the_mean_and_the_standard_error_of_the_mean():
    # mean 2, sample standard deviation 1 (n - 1 = 2 in the denominator), s.e. 1 / sqrt(3)
    assert experiments.mean_se([1.0, 2.0, 3.0]) == f"2.000 ± {1 / math.sqrt(3):.3f}"
    assert experiments.mean_se([0.5, 0.7]) == "0.600 ± 0.100"
    assert experiments.mean_se([0.25]) == "0.250"                       # one seed: no error bar
    assert experiments.mean_se([None, float("nan"), 4.0]) == "4.000"   # missing values left out
    assert experiments.mean_se([]) == "n/a"


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


def test_table_averages_over_seeds_and_skips_missing_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    monkeypatch.setattr(experiments, "SEEDS", (1, 2, 3))
    for seed, greedy in zip((1, 2, 3), (0.4, 0.5, 0.6)):
        fake_run(tmp_path, f"mle_s{seed}", {"accuracy_greedy": greedy, "accuracy_beam": greedy + 0.1})
    fake_run(tmp_path, "iq_s2", {"accuracy_greedy": 0.3}, td=(5.0, 0.25))
    text = experiments.table([("MLE", "mle"), ("IQ", "iq"), ("absent", "nothing")],
                             ("accuracy_greedy", "beam_minus_greedy", "val_td", "self_bleu_correct"))
    lines = text.splitlines()
    assert lines[0] == "| run | accuracy_greedy | beam_minus_greedy | val_td | self_bleu_correct |"
    assert lines[1] == "|---|---|---|---|---|"
    # s.e. of 0.4, 0.5, 0.6: 0.1 / sqrt(3); beam - greedy is 0.1 in every seed; val_td from the
    # last log line; a metric every seed lacks is n/a
    assert lines[2] == f"| MLE (3 seeds) | 0.500 ± {0.1 / math.sqrt(3):.3f} | 0.100 ± 0.000 | 0.500 ± 0.000 | n/a |"
    assert lines[3] == "| IQ (1 seeds) | 0.300 | 0.200 | 0.250 | n/a |"
    assert len(lines) == 4  # the run with no results is left out


def test_load_reads_the_last_log_line_and_averages_timings(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    fake_run(tmp_path, "run_s1", {"accuracy_sample": 0.1}, td=(9.0, 4.0, 2.0))
    r = experiments.load("run_s1")
    assert r["val_td"] == 2.0 and r["update_ms"] == pytest.approx(101.0)
    assert r["beam_minus_sample"] == pytest.approx(0.4)
    assert r["curve"] == {100: 0.0, 200: 0.1, 300: pytest.approx(0.2)}
    assert experiments.load("run_s2") is None


def test_every_run_that_starts_from_a_checkpoint_names_a_planned_run():
    runs = {name: flags for group in experiments.plan().values() for name, flags in group}
    bases = {experiments.needs(flags) for flags in runs.values()} - {None}
    assert bases and bases <= runs.keys()
    assert all(experiments.needs(runs[b]) is None for b in bases)  # bases train from scratch


def test_accuracy_at_matched_self_bleu_interpolates_and_pairs_by_seed():
    # One method's curve through three temperatures: (Self-BLEU, accuracy) = (0.8, 0.4), (0.7, 0.3), (0.6, 0.1)
    rows = [{"temperature": t, "self_bleu": b, "accuracy_sample": a} for t, b, a in
            [(0.5, 0.8, 0.4), (1.0, 0.7, 0.3), (1.3, 0.6, 0.1)]]
    assert experiments.accuracy_at(rows, 0.75) == pytest.approx(0.35)
    assert experiments.accuracy_at(rows, 0.65) == pytest.approx(0.2)
    assert experiments.accuracy_at(rows, 0.7) == pytest.approx(0.3)
    assert experiments.accuracy_at(rows, 0.85) is None and experiments.accuracy_at(rows, 0.55) is None
    # the baseline is 0.05 lower everywhere for seed 1 and 0.15 for seed 2; seed 3 has no baseline
    lower = lambda d: [{**r, "accuracy_sample": r["accuracy_sample"] - d} for r in rows]
    diffs = experiments.paired_difference({1: rows, 2: rows, 3: rows}, {1: lower(0.05), 2: lower(0.15)}, 0.75)
    assert diffs == [pytest.approx(0.05), pytest.approx(0.15)]
    assert experiments.paired_difference({1: rows}, {1: lower(0.05)}, 0.9) == []  # outside: no extrapolation
