"""bench.py runs end to end and reports what it promises; no timing is asserted (CI is noisy)."""

import json
import subprocess
import sys
from pathlib import Path

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
                "mle_peak_mib", "iqlearn_peak_mib"]:
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["mfu"] is None and r["mle_mfu"] is None  # no FLOPS peak for a CPU: n/a, not a guess
    assert r["device"] == "cpu" and r["dtype"] == "float32"
    assert r["config"]["n_embd"] == 16 and r["config"]["lam"] == 0.5


def test_bad_flag_is_one_line_and_exit_2():
    out = bench(*TINY, "--n_embd=15")  # not divisible by n_head
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "n_head" in out.stderr
    assert "Traceback" not in out.stderr
