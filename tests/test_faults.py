"""The promise under faults and hostile input, script by script: one line and a non-zero exit, no
lost work, nothing written outside out_dir (or through a link planted in it). The slower probes,
with real signals at every phase, are tools/probe.py's."""

import ast
import glob
import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch

import bench
import export
import gail
import runfiles
import sample
import toy_mdp
import train
from conftest import TINY
from data import Batches, DataError, Vocab, collate, pair_item, read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = [*TINY, "--eval_problems", "0", "--warmup_iters", "0"]


def call(main, argv):
    """A script's main in this process: its exit code and stderr (argparse exits from inside)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    except KeyboardInterrupt:  # (escaping, it would stop pytest itself)
        return "KeyboardInterrupt escaped"


def one_line(capsys, code, expected_code, message):
    err = capsys.readouterr().err
    assert code == expected_code and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def log_of(out):
    return [json.loads(line) for line in open(out / "log.jsonl")]


def without_ms(row):
    return {k: v for k, v in row.items() if not k.endswith("_ms")}


def signal_on_call(monkeypatch, owner, name, n, signum=signal.SIGTERM):
    """owner.name sends this process `signum` on its n-th call (then behaves as itself)."""
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return real


@pytest.fixture
def keep_handlers():
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, handlers[0])
    signal.signal(signal.SIGTERM, handlers[1])


# --- one main wrapper ----------------------------------------------------------------------------

def scripts():
    found = sorted(glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "examples", "*.py")))
    return [p for p in found if 'if __name__ == "__main__":' in open(p).read()]


@pytest.mark.parametrize("path", scripts(), ids=os.path.basename)
def test_every_script_s_main_goes_through_run_main(path):
    if os.path.basename(path) == "experiments.py":
        pytest.skip("experiments.py: another engineer's (issue 31); its main catches UserError itself")
    tree = ast.parse(open(path).read())
    main = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"), None)
    assert main is not None, "no main()"
    calls = {n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "run_main" in calls, "main() does not call runtime.run_main: a UserError would be a traceback"


# --- 1: a failed write is one line after the bar, and leaves nothing behind -----------------------

def widened(ckpt, path):
    """The tiny checkpoint with a full vocabulary's table (zeros): only such a model exports."""
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["vocab"], checkpoint["model_args"]["vocab_size"] = Vocab(None).state_dict(), Vocab(None).size
    checkpoint["model"]["wte.weight"] = torch.zeros(Vocab(None).size, 32)
    torch.save(checkpoint, path)


def test_an_export_whose_write_fails_is_one_line_and_leaves_no_folder(mle_base, tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    def full_disk(weights, path, metadata):
        open(path, "wb").write(b"part of a file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    widened(mle_base, tmp_path / "full.pt")
    monkeypatch.setattr(export, "safetensors_writer", lambda: full_disk)
    code = call(export.main, ["--ckpt", tmp_path / "full.pt", "--hf_dir", tmp_path / "hf", "--no_check"])
    one_line(capsys, code, 1, "could not write")
    assert sorted(os.listdir(tmp_path)) == ["full.pt"]


# --- 2: links planted in out_dir are never written through --------------------------------------

def test_links_planted_in_out_dir_are_not_followed(tmp_path, capsys):
    out, victims = tmp_path / "out", {name: tmp_path / f"victim_{name}" for name in ("lock", "tmp", "log")}
    out.mkdir()
    for victim in victims.values():
        victim.write_text("precious\n")
    (out / "train.lock").symlink_to(victims["lock"])
    code = call(train.main, [*FAST, "--max_iters", 1, "--out_dir", out])
    one_line(capsys, code, 2, "cannot lock --out_dir")
    (out / "train.lock").unlink()
    (out / "ckpt.pt.tmp").symlink_to(victims["tmp"])  # an earlier version's temporary name
    (out / "log.jsonl").symlink_to(victims["log"])
    assert call(train.main, [*FAST, "--max_iters", 2, "--eval_interval", 1, "--out_dir", out]) == 0
    assert all(victim.read_text() == "precious\n" for victim in victims.values())
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"] and not (out / "log.jsonl").is_symlink()
    assert [row["iter"] for row in log_of(out)] == [1, 2]


def test_temporary_names_are_unpredictable_and_created_exclusively(tmp_path, monkeypatch):
    names = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (names.append(os.path.basename(a)), real(a, b)))
    for i in range(2):
        runfiles.save_checkpoint({"iter_num": i}, str(tmp_path / "ckpt.pt"))
    assert len(set(names)) == 2 and all(n.startswith(".ckpt.pt.") and n != ".ckpt.pt.tmp" for n in names)


# --- 3: data validated at load time; an empty prompt is EOS -------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def pairs(n, empty_prompts):
    return [{"prompt": "" if empty_prompts and i % 2 else f"What is {i} plus 1?\n", "response": f"#### {i + 1}"}
            for i in range(n)]


def test_an_empty_prompt_is_the_state_eos_and_its_first_response_token_an_action():
    vocab = Vocab([5, 6, 7])
    item = pair_item(vocab, "", vocab.decode([1, 2]))
    assert item.tokens.tolist() == [vocab.eos, 1, 2, vocab.eos] and item.n_prompt == 1
    x, y, done = collate([item])
    assert y[0].tolist() == [1, 2, vocab.eos] and done[0].tolist() == [False, False, True]


@pytest.mark.parametrize("script,flags", [(train.main, ["--mixin", "0.5", "--gamma", "0.9"]), (train.main, []),
                                          (gail.main, [])], ids=["online", "offline", "gail"])
def test_empty_prompts_train_through_evaluation_online_and_in_gail(tmp_path, script, flags):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(40, empty_prompts=True))
    out = tmp_path / "out"
    argv = [*TINY, "--data", data, "--max_iters", 2, "--eval_interval", 1, "--out_dir", out, *flags]
    assert call(script, argv) == 0
    assert [row["iter"] for row in log_of(out)] == [1, 2] and "accuracy" in log_of(out)[0]


@pytest.mark.parametrize("line,message", [
    ({"prompt": "", "response": ""}, "bad.jsonl:2: the response is empty"),
    ({"question": "Why?", "answer": ""}, "bad.jsonl:2: the response is empty"),
    ("[" * 100000, "bad.jsonl:2: not valid JSON (nested too deeply)"),
    ('{"prompt": "a", "response": ' + "1" * 5000 + "}", "bad.jsonl:2: not valid JSON (Exceeds the limit"),
], ids=["empty pair", "empty answer", "deep nesting", "long integer"])
def test_bad_records_are_named_by_file_and_line_when_loaded(tmp_path, capsys, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(pairs(1, False)[0]) + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:2"):
        read_jsonl(str(path))
    for script in (train.main, gail.main):
        code = call(script, [*FAST, "--data", path, "--out_dir", tmp_path / "out"])
        one_line(capsys, code, 2, message)
    assert not (tmp_path / "out" / "ckpt.pt").exists()


# --- 4: the evaluation a stopped run owes is done on --resume ------------------------------------

def test_a_stop_in_the_last_iteration_evaluates_on_resume_and_keeps_the_best(tmp_path, monkeypatch, keep_handlers):
    args = [*FAST, "--max_iters", 3, "--eval_interval", 2, "--keep_best", "--learning_rate", 3e-2]
    assert call(train.main, [*args, "--out_dir", tmp_path / "straight"]) == 0
    real = signal_on_call(monkeypatch, Batches, "next", 3)  # in the third and last iteration
    assert call(train.main, [*args, "--out_dir", tmp_path / "stopped"]) == 143
    assert [row["iter"] for row in log_of(tmp_path / "stopped")] == [2]
    monkeypatch.setattr(Batches, "next", real)
    assert call(train.main, ["--resume", "--out_dir", tmp_path / "stopped"]) == 0
    straight, stopped = log_of(tmp_path / "straight"), log_of(tmp_path / "stopped")
    assert list(map(without_ms, stopped)) == list(map(without_ms, straight))
    best = [torch.load(tmp_path / name / "best.pt", weights_only=True) for name in ("straight", "stopped")]
    assert best[0]["iter_num"] == best[1]["iter_num"] and best[0]["best_val_loss"] == best[1]["best_val_loss"]
    assert call(train.main, ["--resume", "--out_dir", tmp_path / "stopped"]) == 0  # nothing owed now
    assert len(log_of(tmp_path / "stopped")) == 2


def gail_args(base):
    return [*TINY, "--init_from", base, "--max_iters", 4, "--eval_interval", 2, "--eval_problems", 0]


@pytest.fixture(scope="module")
def gail_straight_log(mle_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("gail") / "straight"
    assert call(gail.main, [*gail_args(mle_base), "--out_dir", out]) == 0
    return log_of(out)


@pytest.mark.parametrize("stop_at", [3, 4])  # mid-interval (the running means), the last iteration (owed)
def test_gail_resumed_logs_what_an_uninterrupted_run_logs(mle_base, gail_straight_log, tmp_path, monkeypatch,
                                                          keep_handlers, stop_at):
    real = signal_on_call(monkeypatch, gail, "policy_samples", stop_at)
    assert call(gail.main, [*gail_args(mle_base), "--out_dir", tmp_path / "stopped"]) == 143
    monkeypatch.setattr(gail, "policy_samples", real)
    assert call(gail.main, ["--resume", "--out_dir", tmp_path / "stopped"]) == 0
    stopped = log_of(tmp_path / "stopped")
    assert [row["iter"] for row in stopped] == [2, 4]
    assert list(map(without_ms, stopped)) == list(map(without_ms, gail_straight_log))


# --- 5: a checkpoint of the other script --------------------------------------------------------

def test_train_refuses_to_resume_a_gail_checkpoint_in_one_line(mle_base, tmp_path, capsys):
    out = tmp_path / "gail"
    assert call(gail.main, [*TINY, "--init_from", mle_base, "--max_iters", 1, "--eval_problems", 0,
                            "--out_dir", out]) == 0
    before = (out / "ckpt.pt").read_bytes()
    capsys.readouterr()
    one_line(capsys, call(train.main, ["--resume", "--out_dir", out]), 2, "is gail.py's checkpoint; resume it with "
                                                                          "gail.py")
    assert (out / "ckpt.pt").read_bytes() == before


# --- 7: the other scripts -----------------------------------------------------------------------

def test_bench_on_a_checkpoint_whose_data_moved_is_one_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(40, empty_prompts=False))
    out = tmp_path / "out"
    assert call(train.main, [*FAST, "--data", data, "--max_iters", 1, "--lambda", 0, "--out_dir", out]) == 0
    data.unlink()
    capsys.readouterr()
    code = call(bench.main, ["algorithms", "--init_from", out / "ckpt.pt", "--steps", 1, "--warmup", 0])
    one_line(capsys, code, 2, "data file not found")


def test_toy_mdp_refuses_a_plot_it_cannot_write_before_computing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(toy_mdp, "compare_methods", lambda cfg: pytest.fail("computed before checking --plot"))
    code = call(toy_mdp.main, ["--plot", tmp_path / "missing" / "toy.png"])
    one_line(capsys, code, 2, "there is no folder")


# --- 8: flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [train.main, gail.main], ids=["train", "gail"])
@pytest.mark.parametrize("args,message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--seed", str(2**70)], f"--seed must be <= {2**64 - 1}"),
    (["--device", "meta"], "--device meta is not usable here"),
    (["--learning_rate", "inf"], "--learning_rate must be a finite number"),
    (["--weight_decay", "nan"], "--weight_decay must be a finite number"),
])
def test_flags_out_of_range_are_one_line_and_exit_2(tmp_path, capsys, script, args, message):
    one_line(capsys, call(script, [*FAST, "--out_dir", tmp_path / "out", *args]), 2, message)
    assert not (tmp_path / "out" / "ckpt.pt").exists()


def test_gail_checks_the_discriminator_width_against_the_adopted_head_count(mle_base, tmp_path, capsys):
    # mle_base has 2 heads, 32 wide; 36 is divisible by 2 but not by the default 8 heads
    base = ["--init_from", mle_base, "--task_train", 200, "--batch_size", 4, "--max_iters", 1, "--eval_problems", 0,
            "--eval_iters", 1]
    assert call(gail.main, [*base, "--disc_n_embd", 36, "--out_dir", tmp_path / "ok"]) == 0
    assert torch.load(tmp_path / "ok" / "ckpt.pt", weights_only=True)["disc_model_args"]["n_embd"] == 36
    capsys.readouterr()
    code = call(gail.main, [*base, "--disc_n_embd", 35, "--out_dir", tmp_path / "bad"])
    one_line(capsys, code, 2, "--disc_n_embd (35) must be divisible by --disc_n_head (2)")


# --- 9: what a killed run leaves, and messages that are true ------------------------------------

def test_resume_removes_stale_temporaries_and_log_rows_past_the_checkpoint(tmp_path):
    out = tmp_path / "out"
    assert call(train.main, [*FAST, "--max_iters", 2, "--eval_interval", 2, "--out_dir", out]) == 0
    # as a run killed while saving iteration 4 leaves it: its temporary file, and its log row
    for name in ("ckpt.pt.tmp", ".ckpt.pt.k3j9x_2q.tmp"):
        (out / name).write_bytes(b"PK\x03\x04" + bytes(10000))
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"iter": 4, "killed": True}) + "\n")
    assert call(train.main, ["--resume", "--max_iters", 4, "--out_dir", out]) == 0
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]
    rows = log_of(out)
    assert [row["iter"] for row in rows] == [2, 4] and "killed" not in rows[1]


def test_a_non_finite_loss_at_the_first_iteration_claims_no_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "training_loss", lambda *a: (torch.tensor(float("nan"), requires_grad=True),
                                                            {"nll": torch.tensor(0.0), "td": torch.tensor(0.0)}, 1))
    assert call(train.main, [*FAST, "--max_iters", 2, "--out_dir", tmp_path / "out"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no checkpoint was saved yet" in line and "from before this" not in line, line


def test_fine_tuning_on_data_with_new_tokens_grows_the_vocabulary_and_keeps_the_old_rows(mle_base, tmp_path):
    # values up to 80: number tokens the base's compact vocabulary (values up to 50) lacks
    out = tmp_path / "out"
    assert call(train.main, [*FAST, "--init_from", mle_base, "--task_max_value", 80, "--max_iters", 1,
                             "--learning_rate", "1e-9", "--min_lr", "1e-9", "--out_dir", out]) == 0
    base, tuned = runfiles.load_checkpoint(mle_base), runfiles.load_checkpoint(out / "ckpt.pt")
    old, new = base["vocab"]["gpt2_ids"], tuned["vocab"]["gpt2_ids"]
    assert set(old) < set(new) and new == sorted(new)
    old_rows, new_rows = base["model"]["wte.weight"], tuned["model"]["wte.weight"]
    for i, g in enumerate(new):   # by GPT-2 id: an old token keeps its row, a new one has the mean's
        want = old_rows[old.index(g)] if g in old else old_rows.mean(0)
        assert torch.allclose(new_rows[i], want, atol=1e-6), g
    # a resumed run's data never changes its vocabulary: the checkpoint's tokens are all there
    assert call(train.main, ["--resume", "--max_iters", 2, "--out_dir", out]) == 0
    assert runfiles.load_checkpoint(out / "ckpt.pt")["vocab"]["gpt2_ids"] == new


def test_a_script_run_from_the_shell_prints_one_line_too(tmp_path):
    # a UserError deep in setup (the data file), through the real entry point
    proc = subprocess.run([sys.executable, "train.py", *FAST, "--data", str(tmp_path / "no.jsonl"),
                           "--out_dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"train.py: error: data file not found: {tmp_path / 'no.jsonl'}"], proc.stderr
    assert not (tmp_path / "out" / "ckpt.pt").exists()


# --- found by tools/probe.py beyond the issue ---------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda c: c["model_args"].update(rotary=True), "its model_args has 'rotary', which this version does not know"),
    (lambda c: c["vocab"].pop("padded"), "its vocab is not one this version reads"),
    (lambda c: c["config"].update(n_layer="two"), "its config's n_layer is 'two'"),
], ids=["newer model", "older vocab", "config type"])
def test_a_checkpoint_of_another_version_is_one_line(mle_base, tmp_path, capsys, change, message):
    checkpoint = torch.load(mle_base, weights_only=True)
    change(checkpoint)
    (tmp_path / "out").mkdir()
    torch.save(checkpoint, tmp_path / "out" / "ckpt.pt")
    one_line(capsys, call(train.main, ["--resume", "--out_dir", tmp_path / "out"]), 2, message)
    if "config" not in message:  # sample.py reads no training config
        one_line(capsys, call(sample.main, ["--out_dir", tmp_path / "out"]), 2, message)


def test_a_refused_pickle_is_one_line_without_torch_s_warning(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:  # (as a script, a warning would be stderr lines)
        warnings.simplefilter("always")
        code = call(train.main, [*FAST, "--init_from", tmp_path / "evil.pt", "--out_dir", tmp_path / "out"])
    one_line(capsys, code, 2, "is not a readable checkpoint (UnpicklingError)")
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]
    assert not (tmp_path / "ran").exists()


def test_a_folder_planted_where_the_log_goes_is_one_line(tmp_path, capsys):
    (tmp_path / "out" / "log.jsonl").mkdir(parents=True)
    one_line(capsys, call(train.main, [*FAST, "--max_iters", 1, "--out_dir", tmp_path / "out"]), 1,
             "could not write")


def test_a_jsonl_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a", "response": "b"}\n')
    assert read_jsonl(str(path)) == [{"prompt": "a", "response": "b"}]


def test_ctrl_c_outside_a_training_loop_is_one_line_and_an_export_leaves_nothing(
        mle_base, tmp_path, monkeypatch, capsys):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample, "score", interrupt)
    one_line(capsys, call(sample.main, ["--out_dir", mle_base.parent, "--eval", "--num_problems", 1]), 130,
             "sample.py: interrupted")
    widened(mle_base, tmp_path / "full.pt")
    monkeypatch.setattr(export, "readable_as_umask_says", interrupt)  # inside the write
    code = call(export.main, ["--ckpt", tmp_path / "full.pt", "--hf_dir", tmp_path / "hf", "--no_check"])
    one_line(capsys, code, 130, "export.py: interrupted")
    assert sorted(os.listdir(tmp_path)) == ["full.pt"]
