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


# ----------------------------------------------------------------------------------------------
# The 95% interval and the one rule that turns it into words

def test_t_interval_on_a_hand_computed_case():
    # 0.01, 0.03, 0.05: mean 0.03, sample sd 0.02, s.e. 0.02 / sqrt(3) = 0.011547; t(0.975, 2 df) = 4.303,
    # so the half-width is 4.303 x 0.011547 = 0.049687
    m, se, low, high = experiments.t_interval([0.01, 0.03, 0.05])
    assert m == pytest.approx(0.03) and se == pytest.approx(0.0115470, abs=1e-7)
    assert low == pytest.approx(-0.019687, abs=1e-6) and high == pytest.approx(0.079687, abs=1e-6)
    # two values, 1 df: t = 12.706, s.e. = |a - b| / 2
    assert experiments.t_interval([0.1, 0.3])[2:] == pytest.approx((0.2 - 1.2706, 0.2 + 1.2706))
    assert experiments.t_interval([0.5]) is None and experiments.t_interval([None, 0.5]) is None


def test_t_quantiles_are_students():
    try:
        from scipy import stats  # not a project dependency: checked when present
    except ImportError:
        stats = None
    if stats is not None:
        for df, t in experiments.T_975.items():
            assert t == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)
    # published values (any t table): 1 df 12.706, 2 df 4.303, 4 df 2.776, 10 df 2.228
    assert [experiments.T_975[df] for df in (1, 2, 4, 10)] == [12.706, 4.303, 2.776, 2.228]


@pytest.mark.parametrize("low, high, sign, word", [
    (0.01, 0.05, 1, "holds"), (-0.05, -0.01, 1, "does not hold"), (-0.01, 0.05, 1, "within noise"),
    (-0.05, -0.01, -1, "holds"), (0.01, 0.05, -1, "does not hold"), (-0.05, 0.0, -1, "within noise")])
def test_claim_word_follows_the_rule(low, high, sign, word):
    assert experiments.claim_word(low, high, sign) == word


def test_paired_table_gives_the_interval_and_the_word_of_the_rule(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    greedy = {"mle": (0.50, 0.60, 0.70), "up": (0.60, 0.72, 0.78), "noisy": (0.55, 0.55, 0.70),
              "down": (0.30, 0.38, 0.52)}
    for prefix, values in greedy.items():
        for seed, g in enumerate(values, start=1):
            fake_run(tmp_path, f"{prefix}_s{seed}", {"accuracy_greedy": g, "self_bleu": g})
    text = experiments.paired_table([("up", "up", "mle"), ("noisy", "noisy", "mle"), ("down", "down", "mle")],
                                    ("accuracy_greedy", "self_bleu"))
    lines = text.splitlines()
    assert lines[0] == "| paired difference | accuracy_greedy (claim > 0) | self_bleu (claim < 0) |"
    # up: differences 0.10, 0.12, 0.08, mean 0.10, s.e. 0.02 / sqrt(3), interval 0.10 ± 4.303 x 0.011547
    assert lines[2].startswith("| up | +0.100 ± 0.012 [+0.050, +0.150] (n = 3): holds |")
    assert lines[2].endswith("[+0.050, +0.150] (n = 3): does not hold |")   # higher Self-BLEU: less diverse
    assert "(n = 3): within noise" in lines[3].split("|")[2]                   # 0.05, -0.05, 0.00
    assert lines[4].split("|")[2].strip().endswith("does not hold")           # -0.20, -0.22, -0.18
    assert lines[4].split("|")[3].strip().endswith(": holds")


def test_tables_use_every_seed_that_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    for seed in (1, 2, 3, 4, 5):
        fake_run(tmp_path, f"mle_s{seed}", {"accuracy_greedy": 0.1 * seed})
    fake_run(tmp_path, "mle2_s7", {})                  # another run whose name starts the same
    (tmp_path / "mle_s9").mkdir()                      # no evaluation yet
    assert experiments.seeds_of("mle") == [1, 2, 3, 4, 5]
    assert "| MLE (5 seeds) | 0.300 ± " in experiments.table([("MLE", "mle")], ("accuracy_greedy",))


# ----------------------------------------------------------------------------------------------
# Provenance: run.json

def test_backfill_recovers_the_commands_and_says_unknown_for_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    folder = tmp_path / "gamma0.9_lam0.1_s2"
    folder.mkdir()
    (folder / "frontier.json").write_text(json.dumps({"temperature": 0.5, "seconds": 812.5}) + "\n"
                                          + json.dumps({"temperature": 1.0, "seconds": 812.5}) + "\n")
    (tmp_path / "not_a_planned_run").mkdir()
    assert experiments.backfill_provenance() == ["gamma0.9_lam0.1_s2"]
    facts = json.loads((folder / "run.json").read_text())
    assert facts["train_command"] == ("python train.py --n_embd 128 --n_head 4 --max_iters 1200 --eval_interval 200 "
                                      "--seed 2 --lambda 0.1 --gamma 0.9 --out_dir runs/gamma0.9_lam0.1_s2")
    assert facts["sample_command"] == ("python sample.py --out_dir runs/gamma0.9_lam0.1_s2 --eval --json "
                                       "--num_problems 300 --num_samples 5 --temperature 0.5,0.7,1.0,1.3")
    assert facts["eval_seconds"] == 812.5 and facts["backfilled"] is True
    for key in ("commit", "torch", "cpu", "threads", "train_seconds"):
        assert facts[key] == "unknown"
    assert experiments.backfill_provenance() == []   # a folder with run.json is left alone
    printed = experiments.provenance("gamma0.9_lam0.1_s2")
    assert "train_command" in printed and "--gamma 0.9" in printed


def test_a_run_records_its_machine_and_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    (tmp_path / "quickstart_lam0").mkdir()
    experiments.write_provenance("quickstart_lam0", {"train_command": "python train.py --lambda 0",
                                                     "train_seconds": 783.0})
    facts = json.loads((tmp_path / "quickstart_lam0" / "run.json").read_text())
    assert facts["name"] == "quickstart_lam0" and facts["threads"] == 1
    assert facts["cpu"] and facts["torch"] and len(facts["commit"]) in (40, len("unknown"))
    fake_run(tmp_path, "quickstart_lam0.5", {"accuracy_beam": 0.58, "self_bleu": 0.641}, td=(0.5, 0.07))
    # quickstart_lam0 has a run.json but no evaluation: only the λ = 0.5 row
    table = experiments.quickstart_table().splitlines()
    assert table[4] == "| `python train.py --lambda 0.5` | 0.100 | 0.900 | unknown | 0.580 | 0.641 |"
    assert len(table) == 5 or table[5] == ""


# ----------------------------------------------------------------------------------------------
# The reason for the null: KL to a tempered MLE

def test_tempered_kl_finds_the_temperature_a_policy_was_made_with():
    torch = pytest.importorskip("torch")
    reference = torch.randn(200, 30, generator=torch.Generator().manual_seed(0)) * 3
    kl = experiments.tempered_kl(reference / 1.5, reference)   # the policy IS the reference at T = 1.5
    best = min(range(len(kl)), key=kl.__getitem__)
    assert experiments.KL_TEMPERATURES[best] == 1.5 and kl[best] == pytest.approx(0.0, abs=1e-9)
    assert kl[experiments.KL_TEMPERATURES.index(1.0)] > 0.01


def test_null_reason_report_pairs_each_policy_with_the_floor_of_its_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
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
    text = experiments.null_reason_report()
    recipe_row = next(line for line in text.splitlines() if line.startswith(f"| {recipe}"))
    # paired differences 0.11 - 0.08 = 0.03 and 0.13 - 0.09 = 0.04: mean 0.035, s.e. 0.005, 1 df
    assert recipe_row.endswith("| +0.0350 ± 0.0050 [−0.0285, +0.0985] (n = 2): within noise |")
    assert "1 of 1 logs equal" in text


def test_machine_names_the_changed_files_whole(monkeypatch):
    answers = {"status": " M experiments.py\nM  train.py", "rev-parse": "0" * 40}
    monkeypatch.setattr(experiments, "git", lambda *args: answers[args[0]])
    facts = experiments.machine()
    assert facts["uncommitted_changes"] == ["experiments.py", "train.py"] and facts["commit"] == "0" * 40


# ----------------------------------------------------------------------------------------------
# GAIL in the fine-tuning protocol

def test_gail_runs_are_gail_py_runs_from_the_protocols_mle_bases():
    import gail
    from runtime import parse_config
    groups = experiments.plan()
    gail_runs = [run for run in groups["gail"] + groups["gail_controls"] if run[0].startswith("gail")]
    assert len(gail_runs) == 4 * len(experiments.SEEDS)   # GAIL, its control, and both without the MLE loss
    for name, flags in gail_runs:
        seed = name.rsplit("_s", 1)[1]
        assert experiments.script(name) == "gail.py" and experiments.needs(flags) == f"sweep_lam0_s{seed}"
        c, _ = parse_config(gail.GailConfig, flags, "gail.py", "")   # every flag is gail.py's own
        assert c.shuffle_rewards == ("shuffled" in name) and c.mle_weight == (0.0 if "mle0" in name else 1.0)
    # the frontier's fine-tuned runs are the protocol's own, trained by train.py with the same flags
    frontier = dict(groups["gail_frontier"])
    assert frontier["finetune_lam0_s2"] == dict(groups["value_head"])["finetune_lam0_s2"]
    assert experiments.script("finetune_lam0_s2") == "train.py"
    # the IQLearn that GAIL meets is the recipe with the head, evaluated by the gail group too
    recipe = dict(groups["gail"])["finetune_head_gamma0.9_lam0.1_s2"]
    assert recipe == frontier["finetune_head_gamma0.9_lam0.1_s2"] and experiments.script("finetune_head") == "train.py"
    assert recipe[recipe.index("--lambda"):] == ["--lambda", "0.1", "--gamma", "0.9", "--value_head"]


def test_stability_is_the_largest_fall_below_the_mle_base(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    for name, accuracies in (("sweep_lam0_s1", [0.3, 0.6]), ("sweep_lam0_s2", [0.5, 0.5]),
                             ("gail_mle0_s1", [0.55, 0.45, 0.62]), ("gail_mle0_s2", [0.52, 0.51, 0.5])):
        fake_run(tmp_path, name, {}, td=tuple(range(len(accuracies))))
        log = [{"iter": 100 * (i + 1), "val_nll": 1.0, "val_entropy": 0.3, "accuracy": a, "disc_accuracy": 0.5,
                "update_ms": 1.0, "sample_ms": 1.0} for i, a in enumerate(accuracies)]
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    # base: the from-scratch run's last evaluation (0.6); the worst evaluation 0.45 is 0.15 below it
    assert experiments.largest_fall("gail_mle0_s1", 1) == pytest.approx(0.15)
    assert experiments.largest_fall("gail_mle0_s2", 2) == pytest.approx(0.0)   # 0.5 - 0.5: never fell
    row = next(line for line in experiments.gail_report().splitlines()
               if line.startswith("| GAIL without the MLE") and "s1:" in line)   # the stability table's row
    assert row.endswith("| 1 of 2 |") and "s1: +0.150, s2: +0.000" in row


def test_a_second_evaluation_keeps_the_first_runs_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path))
    fake_run(tmp_path, "finetune_lam0_s1", {})
    experiments.write_provenance("finetune_lam0_s1", {"sample_command": "first"})
    experiments.write_provenance("finetune_lam0_s1", {"sample_command": "frontier", "log_equals_kept": True},
                                 "frontier.json")
    facts = json.loads((tmp_path / "finetune_lam0_s1" / "run.json").read_text())
    assert facts["sample_command"] == "first"
    assert facts["frontier.json"]["sample_command"] == "frontier" and facts["frontier.json"]["log_equals_kept"]


def test_a_resumed_run_records_the_planned_command_and_the_one_that_resumed_it(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", str(tmp_path))
    ran = []
    monkeypatch.setattr(experiments.subprocess, "run", lambda command, **kw: ran.append(command[1:]))
    flags = ["--max_iters", "400", "--seed", "2", "--mle_weight", "0"]
    fresh = experiments.train_run("gail_mle0_s2", flags, {})
    assert ran[-1] == ["gail.py", *flags, "--out_dir", str(tmp_path / "gail_mle0_s2")]
    assert fresh["train_command"] == "python " + " ".join(ran[-1]) and fresh["train_resumed"] is False
    assert "resumed_with" not in fresh
    (tmp_path / "gail_mle0_s2" / "ckpt.pt").parent.mkdir()
    (tmp_path / "gail_mle0_s2" / "ckpt.pt").write_bytes(b"")
    resumed = experiments.train_run("gail_mle0_s2", flags, {})
    assert ran[-1] == ["gail.py", "--resume", "--max_iters", "400", "--out_dir", str(tmp_path / "gail_mle0_s2")]
    assert resumed["train_command"] == fresh["train_command"] and resumed["train_resumed"] is True
    assert resumed["resumed_with"] == "python " + " ".join(ran[-1])


def test_a_retrained_log_reproduces_the_kept_one_on_every_number_the_kept_one_has(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(experiments, "RESULTS", str(tmp_path / "results"))
    kept = [{"iter": 100, "val_nll": 0.5, "accuracy": 0.3, "update_ms": 10.0},
            {"iter": 200, "val_nll": 0.4, "accuracy": 0.4, "update_ms": 11.0}]

    def check(retrained):
        for root, log in (("results", kept), ("runs", retrained)):
            (tmp_path / root / "r_s1").mkdir(parents=True, exist_ok=True)
            (tmp_path / root / "r_s1" / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
        return experiments.same_log("r_s1")["log_equal"]

    # other timings and a key logged only since are not differences
    assert check([{**e, "update_ms": 99.0, "val_value_mean": 3.0} for e in kept])
    assert not check([kept[0], {**kept[1], "accuracy": 0.405}])   # one number changed
    assert not check(kept[:1])                                      # an evaluation missing
    assert not check([{k: v for k, v in e.items() if k != "val_nll"} for e in kept])   # a kept number missing
