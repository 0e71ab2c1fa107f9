"""Tests run offline: use the repository's neighbouring GPT-2 BPE cache when there is one. The one
fixture two test files share: a tiny MLE checkpoint made by train.py. And --slow, which adds the
tests marked slow (CI passes it; a plain run skips them, saying so)."""

import os

import pytest

_CACHE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tiktoken_cache")
if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(_CACHE):
    os.environ["TIKTOKEN_CACHE_DIR"] = os.path.abspath(_CACHE)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI does)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a check that starts processes of its own; runs with --slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--slow"):
        skip = pytest.mark.skip(reason="marked slow: run with --slow, as CI does")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


# A tiny run of the built-in task, for GAIL's tests and `bench.py algorithms` (gail.py takes these flags too).
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "2", "--eval_iters", "1"]


@pytest.fixture(scope="session")
def mle_base(tmp_path_factory):
    """A tiny MLE model: 10 iterations of train.py at lambda 0; its ckpt.pt (made once: no test changes it)."""
    import train
    out = tmp_path_factory.mktemp("mle") / "base"
    assert train.main([*TINY, "--lambda", "0", "--max_iters", "10", "--eval_interval", "10", "--warmup_iters", "2",
                       "--learning_rate", "1e-2", "--min_lr", "1e-3", "--out_dir", str(out)]) == 0
    return out / "ckpt.pt"


def save_random_gpt2(folder, n_positions: int) -> str:
    """A random 2-layer GPT-2 with GPT-2's vocabulary, its biases and LayerNorms perturbed (a dropped
    one would show), saved into folder as Hugging Face saves it (test_hf_loss and test_trl)."""
    import torch
    import transformers
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=n_positions, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(folder)
    return str(folder)
