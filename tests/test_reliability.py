"""A run's life: stop signals save and resume exactly, one run per out_dir, durable saves that fail
cleanly, and the best checkpoint. Where the behaviour is about processes the tests use real ones,
and they wait for a file rather than for a fixed time."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import model
import sample
import train
from data import Batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "4", "--eval_iters", "1", "--warmup_iters", "2"]
# A run that would go on for a long time, on a fixed schedule, evaluating only at its end: its
# first N iterations are the same whatever max_iters a resumed or straight run uses.
LONG = ["--max_iters", "100000", "--lr_decay_iters", "100000", "--eval_interval", "100000"]
# The subprocesses use as many threads as this process, so their arithmetic is the same.
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def start(*args, ddp=False):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if ddp \
        else [sys.executable]
    env = {**ENV, "OMP_NUM_THREADS": "1"} if ddp else ENV
    return subprocess.Popen([*launcher, os.path.join(ROOT, "train.py"), *TINY, *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, what, timeout=180):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited {proc.returncode} before {what}:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.1)


def checkpoint(path):
    return torch.load(path, weights_only=True)


def assert_same_weights(a, b):
    wa, wb = checkpoint(a)["model"], checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# --- signals -------------------------------------------------------------------------------------

def test_sigterm_to_a_real_run_saves_where_it_stopped_and_resume_matches_a_straight_run(tmp_path):
    out = tmp_path / "stopped"
    proc = start(*LONG, "--out_dir", out)
    wait_for(lambda: (out / "log.jsonl").exists(), proc, "the log")  # set up, about to train
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    stopped_at = int(re.search(r"stopped by SIGTERM at iter (\d+)", err).group(1))
    assert 1 <= stopped_at < 100000 and checkpoint(out / "ckpt.pt")["iter_num"] == stopped_at
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]  # no temp file, the lock released
    end = ["--max_iters", str(stopped_at + 2)]
    assert train.main(["--resume", *end, "--out_dir", str(out)]) == 0
    assert train.main([*TINY, *LONG, *end, "--out_dir", str(tmp_path / "straight")]) == 0
    assert_same_weights(tmp_path / "straight" / "ckpt.pt", out / "ckpt.pt")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_at_the_next_iteration_and_a_second_one_does_not_break_the_save(
        tmp_path, monkeypatch, capsys, signum, code):
    real_next, real_save, calls = Batches.next, model.save_checkpoint, []

    def next_then_signal(self):
        calls.append(1)
        if len(calls) == 3:  # during the third iteration
            os.kill(os.getpid(), signum)
        return real_next(self)

    def save_while_signalled(checkpoint, path):
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while saving: noted, the write goes on
        real_save(checkpoint, path)

    monkeypatch.setattr(Batches, "next", next_then_signal)
    monkeypatch.setattr(train, "save_checkpoint", save_while_signalled)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert train.main([*TINY, "--max_iters", "6", "--eval_interval", "100", "--out_dir", str(out)]) == code
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    assert checkpoint(out / "ckpt.pt")["iter_num"] == 3
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]
    assert f"stopped by {signal.Signals(signum).name} at iter 3" in capsys.readouterr().err


def test_sigterm_to_the_ddp_launcher_leaves_one_resumable_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    proc = start(*LONG, "--out_dir", out, ddp=True)
    wait_for(lambda: (out / "log.jsonl").exists(), proc, "the log")  # both ranks set up
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to each rank
    _, err = proc.communicate(timeout=180)
    stopped_at = int(re.search(r"stopped by SIGTERM at iter (\d+)", err).group(1))
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]
    assert checkpoint(out / "ckpt.pt")["iter_num"] == stopped_at >= 1
    assert train.main(["--resume", "--max_iters", str(stopped_at + 1), "--out_dir", str(out)]) == 0
    assert checkpoint(out / "ckpt.pt")["iter_num"] == stopped_at + 1


# --- one run per out_dir -------------------------------------------------------------------------

def test_a_second_run_on_a_locked_out_dir_exits_2_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert train.main([*TINY, "--max_iters", "2", "--eval_interval", "100", "--out_dir", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in ("ckpt.pt", "log.jsonl")}
    first = start("--resume", *LONG, "--out_dir", out)  # holds the lock; writes nothing until it ends
    lock = out / "train.lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first, "the lock")
    capsys.readouterr()
    try:
        for args in ([*TINY, "--out_dir", str(out)], ["--resume", "--out_dir", str(out)]):
            assert train.main(args) == 2
            err = capsys.readouterr().err
            assert f"in use by another run (pid {first.pid})" in err and len(err.strip().splitlines()) == 1, err
            assert {name: (out / name).read_bytes() for name in before} == before
            assert lock.read_text().strip() == str(first.pid)
    finally:
        first.kill()  # SIGKILL: no save, and the lock file stays behind, held by no one
        first.wait(timeout=60)
    assert lock.exists()
    assert train.main(["--resume", "--max_iters", "3", "--out_dir", str(out)]) == 0  # the lock is free
    assert checkpoint(out / "ckpt.pt")["iter_num"] == 3 and not lock.exists()


# --- durable saves -------------------------------------------------------------------------------

def full_disk(checkpoint, f):
    f.write(b"PK\x03\x04 the first bytes of a zip")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_save_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    model.save_checkpoint({"iter_num": 1}, path)
    before = open(path, "rb").read()
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as failure:
        model.save_checkpoint({"iter_num": 2}, path)
    assert failure.value.errno == errno.ENOSPC
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_run_whose_save_fails_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert train.main([*TINY, "--max_iters", "2", "--eval_interval", "2", "--out_dir", str(out)]) == 0
    before = (out / "ckpt.pt").read_bytes()
    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert train.main(["--resume", "--max_iters", "6", "--out_dir", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "could not write" in errors[0] and "No space left" in errors[0], errors
    assert "at iter 4" in errors[0]  # it stopped at the first save that failed
    assert (out / "ckpt.pt").read_bytes() == before
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]


def test_sample_reads_the_last_complete_checkpoint_while_a_run_writes_the_next(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    assert train.main([*TINY, "--max_iters", "2", "--eval_interval", "100", "--out_dir", out]) == 0
    real_save, sampled = torch.save, []

    def save_slowly(checkpoint, f):
        f.write(b"PK\x03\x04 half of the new file")  # the new checkpoint is part written...
        f.flush()
        sampled.append(sample.main(["--out_dir", out, "--eval", "--json", "--num_problems", "2",
                                    "--num_samples", "1", "--max_new_tokens", "4"]))  # ...as sample.py reads
        f.seek(0)
        f.truncate()
        real_save(checkpoint, f)

    monkeypatch.setattr(torch, "save", save_slowly)
    assert train.main(["--resume", "--max_iters", "3", "--out_dir", out]) == 0
    assert sampled == [0] and "accuracy_greedy" in capsys.readouterr().out
    assert checkpoint(os.path.join(out, "ckpt.pt"))["iter_num"] == 3


# --- the best checkpoint -------------------------------------------------------------------------

def test_keep_best_writes_the_checkpoint_of_the_lowest_val_loss_also_across_a_resume(tmp_path):
    # (Without --keep_best there is no best.pt: the other tests' out_dir listings show it.)
    out = str(tmp_path / "out")
    assert train.main([*TINY, "--max_iters", "3", "--eval_interval", "1", "--eval_problems", "0",
                       "--learning_rate", "3e-2", "--min_lr", "1e-3", "--keep_best", "--out_dir", out]) == 0
    # a learning rate far too high makes the val loss worse than before the resume
    assert train.main(["--resume", "--max_iters", "6", "--learning_rate", "1", "--min_lr", "1", "--out_dir", out]) == 0
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    best_line = min(log, key=lambda e: e["val_loss"])
    assert [e["iter"] for e in log] == [1, 2, 3, 4, 5, 6] and best_line["iter"] < 6  # the best is not the last
    best = checkpoint(os.path.join(out, "best.pt"))
    assert best["iter_num"] == best_line["iter"] and best["best_val_loss"] == best_line["val_loss"]
    assert checkpoint(os.path.join(out, "ckpt.pt"))["iter_num"] == 6
