"""Tests run offline: use the repository's neighbouring GPT-2 BPE cache when there is one. And the
one fixture two test files share: a tiny MLE checkpoint made by train.py."""

import os

import pytest

_CACHE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tiktoken_cache")
if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(_CACHE):
    os.environ["TIKTOKEN_CACHE_DIR"] = os.path.abspath(_CACHE)

# A tiny run of the built-in task, for GAIL's tests and bench.py's --algorithms (gail.py takes these flags too).
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "2", "--eval_iters", "1"]


@pytest.fixture(scope="module")
def mle_base(tmp_path_factory):
    """A tiny MLE model: 10 iterations of train.py at lambda 0; its ckpt.pt."""
    import train
    out = tmp_path_factory.mktemp("mle") / "base"
    assert train.main([*TINY, "--lambda", "0", "--max_iters", "10", "--eval_interval", "10", "--warmup_iters", "2",
                       "--learning_rate", "1e-2", "--min_lr", "1e-3", "--out_dir", str(out)]) == 0
    return out / "ckpt.pt"
