"""bench.py runs end to end and reports what it promises; no timing is asserted (CI is noisy)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import (algorithms_benchmark, make_batch, make_contenders, model_config, parse_args, peak_step_memory,
                   print_algorithms_report, train_step)
from model import GPT
from runtime import step_memory

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2",
        "--vocab_size=64", "--steps=2", "--warmup=1", "--device=cpu"]


def bench(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench.py", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_json_report_has_positive_times_and_ratios():
    out = bench(*TINY, "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in ["mle_ms", "iqlearn_ms", "time_ratio", "mem_ratio", "tokens_per_s",
                "mle_peak_mib", "iqlearn_peak_mib", "loss_ratio_initial", "loss_ratio_wide"]:
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["mfu"] is None and r["mle_mfu"] is None  # no FLOPS peak for a CPU: n/a, not a guess
    assert r["device"] == "cpu" and r["dtype"] == "float32"
    assert r["config"]["n_embd"] == 16 and r["config"]["lam"] == 0.5


def test_bad_flag_is_one_line_and_exit_2():
    out = bench(*TINY, "--n_embd=15")  # not divisible by n_head
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "n_head" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_step_memory_on_paper_is_what_the_cpu_profiler_records(dtype):
    # Activations and logits dominate here, as in a real run; the profiler sees every tensor.
    args = parse_args(["--n_layer=2", "--n_head=4", "--n_embd=64", "--block_size=128", "--batch_size=8",
                             "--vocab_size=2048", "--device=cpu", f"--dtype={dtype}"])
    config = model_config(args)
    run = make_contenders(GPT(config), args)["iqlearn"]
    batch = make_batch(args, "cpu")
    train_step(run, batch, args)  # AdamW's moments exist from here on, as before every later step
    measured = peak_step_memory(run, batch, args)
    paper = step_memory(config, args.batch_size, args.seq_len, half=dtype != "float32")
    assert paper["peak"] - paper["weights_adamw"] == pytest.approx(measured, rel=0.02)


def test_gpt2_memory_table_lists_every_size_and_grows_with_it():
    out = bench("memory", "--batch_size=8", "--block_size=512", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["model"] for r in rows] == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    assert 124e6 < rows[0]["params"] < 125e6   # GPT-2 small: 124M with the position table cropped to 512
    assert all(a["peak"] < b["peak"] for a, b in zip(rows, rows[1:]))
    assert all(r["peak"] < r["peak_float32"] for r in rows)


def test_algorithms_times_whole_iterations_of_mle_iqlearn_and_gail(mle_base, capsys):
    args = parse_args(["algorithms", "--init_from", str(mle_base), "--steps=1", "--warmup=0", "--device=cpu"])
    r = algorithms_benchmark(args)
    for key in ["mle_ms", "iqlearn_ms", "gail_ms", "gail_sample_ms", "gail_disc_ms", "gail_policy_ms",
                "iqlearn_ratio", "gail_ratio"]:
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["gail_ratio"] == pytest.approx(r["gail_ms"] / r["mle_ms"])
    assert r["config"]["batch_size"] == 8 and r["config"]["n_embd"] == 32  # the checkpoint's run's
    print_algorithms_report(r)
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[3:6]] == ["MLE", "IQLearn", "GAIL"]


@pytest.mark.parametrize("flags, message", [
    (["algorithms"], "the following arguments are required: --init_from"),
    (["--init_from", "ckpt.pt"], "unrecognized arguments: --init_from"),
    (["algorithms", "--init_from", "ckpt.pt", "--n_embd=64", "--compile"], "unrecognized arguments: --n_embd=64 --compile"),
    (["memory", "--steps", "3"], "unrecognized arguments: --steps"),
    (["algorithms", "--init_from", "no/such/ckpt.pt"], "no checkpoint at no/such/ckpt.pt"),
])
def test_bad_algorithms_flags_are_one_line_and_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(flags)
    err = capsys.readouterr().err
    assert raised.value.code == 2 and message in err and err.strip().count("\n") == 0
