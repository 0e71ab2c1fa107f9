"""The run machinery (runtime.py): stop signals save and resume exactly, one run per out_dir,
durable saves that fail cleanly, the best checkpoint, flags, loading weights, and a step's memory on
paper. Where the behaviour is about processes the tests use real ones, and they wait for a file
rather than for a fixed time."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

import errors
import runfiles
import runtime
import sample
import train
from data import Batches
from model import GPT, GPTConfig

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
    real_next, real_save, calls = Batches.next, runfiles.save_checkpoint, []

    def next_then_signal(self):
        calls.append(1)
        if len(calls) == 3:  # during the third iteration
            os.kill(os.getpid(), signum)
        return real_next(self)

    def save_while_signalled(checkpoint, path):
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while saving: noted, the write goes on
        real_save(checkpoint, path)

    monkeypatch.setattr(Batches, "next", next_then_signal)
    monkeypatch.setattr(runfiles, "save_checkpoint", save_while_signalled)
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


def full_disk_in_torch(checkpoint, f):
    """What torch.save does on a full disk: its zip writer reports the failed write as a RuntimeError."""
    f.write(b"PK\x03\x04 the first bytes of a zip")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


@pytest.mark.parametrize("fault,reason", [(full_disk, "No space left"), (full_disk_in_torch, "unexpected pos")])
def test_a_failed_save_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, fault, reason):
    path = str(tmp_path / "ckpt.pt")
    runfiles.save_checkpoint({"iter_num": 1}, path)
    before = open(path, "rb").read()
    monkeypatch.setattr(torch, "save", fault)
    with pytest.raises(errors.WriteError, match=f"could not write {re.escape(path)} .*{reason}"):
        runfiles.save_checkpoint({"iter_num": 2}, path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize("fault", [full_disk, full_disk_in_torch])
def test_a_run_whose_save_fails_stops_with_one_line_after_the_bar_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, capsys, fault):
    out = tmp_path / "out"
    assert train.main([*TINY, "--max_iters", "2", "--eval_interval", "2", "--out_dir", str(out)]) == 0
    before = (out / "ckpt.pt").read_bytes()
    monkeypatch.setattr(torch, "save", fault)
    capsys.readouterr()
    assert train.main(["--resume", "--max_iters", "6", "--out_dir", str(out)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1] == errors[0] and errors[0].startswith("train.py: error: could not write"), err
    assert "at iter 4; the previous one is kept" in errors[0]  # it stopped at the first save that failed
    assert (out / "ckpt.pt").read_bytes() == before
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]


def test_a_first_save_that_fails_does_not_claim_a_previous_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "save", full_disk_in_torch)
    out = tmp_path / "out"
    assert train.main([*TINY, "--max_iters", "2", "--eval_interval", "2", "--out_dir", str(out)]) == 1
    line = capsys.readouterr().err.splitlines()[-1]
    assert "there was none before" in line and "start it again" in line and "kept" not in line, line
    assert sorted(os.listdir(out)) == ["log.jsonl"]


def test_a_real_full_disk_is_one_line_and_no_temp_file(tmp_path):
    # RLIMIT_FSIZE: writes past 64 KiB fail with EFBIG (SIGXFSZ ignored), as on a full disk
    out = tmp_path / "out"
    limit = "import resource, signal, runpy, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " \
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); sys.argv = sys.argv[1:]; " \
            "runpy.run_path('train.py', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", limit, "train.py", *TINY, "--max_iters", "2", "--eval_interval", "1",
                           "--out_dir", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith("train.py: error: could not write"), proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["log.jsonl"]


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


# --- flags ---------------------------------------------------------------------------------------

def parse(argv):
    return runtime.parse_config(train.TrainConfig, argv, "train.py", "")


def test_help_shows_every_flag_with_its_default():
    parser = runtime.config_parser(train.TrainConfig, "train.py", "")
    text = parser.format_help()
    flags = [a for a in parser._actions if a.dest != "help"]
    assert text.count("(default:") == len(flags)
    assert parse(["--lambda=0.25"])[0].lam == parse(["--lambda", "0.25"])[0].lam == 0.25


def test_parse_config_reports_exactly_the_flags_given():
    config, given = parse(["--lambda", "0", "--n_layer=2", "--value_head"])
    assert given == {"lam", "n_layer", "value_head"}
    assert (config.lam, config.n_layer, config.value_head) == (0.0, 2, True)
    assert config.gamma == train.TrainConfig().gamma  # not given: the default
    assert parse([]) == (train.TrainConfig(), set())



# --- weights and the memory of a step on paper ----------------------------------------------------

def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))


def test_weights_without_a_head_load_into_a_model_with_one():
    plain, headed = tiny(), tiny(value_head=True)
    with torch.no_grad():
        headed.value_head.bias.fill_(3.0)
        for p in plain.parameters():
            p.add_(0.5)
    runfiles.load_weights(headed, plain.state_dict())
    assert headed.value_head.bias.item() == 3.0  # a head the weights do not have keeps its value
    idx = torch.randint(0, 37, (2, 5))
    torch.testing.assert_close(headed(idx) - 3.0, plain(idx), atol=1e-5, rtol=0)
    with pytest.raises(errors.CheckpointError, match="do not fit"):
        runfiles.load_weights(tiny(), headed.state_dict())  # the reverse drops a trained head: refused


@pytest.mark.parametrize("bias,value_head", [(False, False), (True, False), (True, True)])
def test_param_counts_add_up_to_the_model_built(bias, value_head):
    config = GPTConfig(vocab_size=97, block_size=16, n_layer=3, n_head=2, n_embd=8, bias=bias, value_head=value_head)
    assert sum(runtime.param_counts(config).values()) == sum(p.numel() for p in GPT(config).parameters())


def test_step_memory_is_the_hand_count_of_a_tiny_config():
    # V = 10 tokens, block 4, one block 4 wide with 2 heads, biases; 2 rows of 3 tokens = 6 tokens.
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=4, bias=True)
    # wte 10*4 + wpe 4*4 + 3 LayerNorms 3*(4+4) + c_attn 4*12+12 + c_proj 4*4+4 + c_fc 4*16+16 + c_proj 16*4+4
    n = 40 + 16 + 24 + 60 + 20 + 80 + 68
    # Per token, float32: ln_1 in, ln_1 out (4 + 4), qkv 12, attention out 4, ln_2 in, out (4 + 4),
    # MLP 16 before and 16 after GELU = 64 floats; 2 LayerNorms' mean and rstd, 2 heads' log-sum-exp
    # = 6 floats; ln_f in and out 8 floats. Logits and logsumexp's temporary: 2 * 10 floats.
    per_token = 4 * (64 + 6 + 8)
    expected = {"weights_adamw": 12 * n, "activations": 6 * per_token, "logits": 6 * 2 * 10 * 4,
                "gradients": 4 * n + 2 * 4 * 40}  # + two transient copies of wte's gradient
    expected["peak"] = 12 * n + 6 * per_token + 6 * 80  # activations + logits exceed the gradients
    assert runtime.step_memory(config, rows=2, seq_len=3, half=False) == expected
    # bf16 autocast: fp32 LN inputs 2 * 4 * 4 bytes, 16-bit LN outputs, qkv, attention out, MLP
    # (4 + 12 + 4 + 4 + 16 + 16) * 2 bytes, the same fp32 statistics; ln_f in fp32, out 16-bit;
    # 16-bit copies of the Linear weights (wte as lm_head too); logits 16-bit, fp32 copy, temporary.
    per_token = 32 + 56 * 2 + 6 * 4 + 4 * 4 + 4 * 2
    half = runtime.step_memory(config, rows=2, seq_len=3, half=True)
    assert half["activations"] == 6 * per_token + 2 * (n - 16 - 24)
    assert half["logits"] == 6 * 10 * (2 + 4 + 4)


def test_the_cuda_memory_line_names_the_parts_and_warns_when_the_gpu_is_too_small(monkeypatch, capsys):
    # No GPU here: the line is what train.py prints on one, given the GPU's size.
    config = GPTConfig(vocab_size=50257, block_size=512, n_layer=12, n_head=12, n_embd=768, bias=True)
    need = runtime.step_memory(config, 8, 512, half=True)["peak"]
    for total, warned in [(80 * 2**30, False), (need - 1, True)]:
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=total))
        runtime.print_step_memory(config, 8, 512, "cuda:0", torch.bfloat16)
        out, err = capsys.readouterr()
        assert f"a step needs about {need / 2**30:.1f} GiB on paper" in out and "weights and AdamW" in out
        assert ("more than this GPU has" in err) == warned
