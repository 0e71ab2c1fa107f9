"""IQLearn as the loss of a Hugging Face training loop (examples/hf_iqlearn.py), checked against
transformers' own causal-LM loss at lam = 0 and against our loss on our model (GPT-2's weights
imported by --init_from's code path) at lam > 0, in value and gradient, with and without a value
offset. Skipped with the reason when the optional transformers is missing (CI installs it)."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from conftest import save_random_gpt2
from data import IGNORE, Item, collate
from gpt2 import gpt2_checkpoint
from iqlearn import iqlearn_loss
from runfiles import model_from_checkpoint

transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS = 50256  # GPT-2's end-of-text, also its padding (GPT-2 has no pad token)
IGNORE_HF = -100  # Hugging Face's ignore index for labels (data.py's is IGNORE = -1)


def load_example():
    spec = importlib.util.spec_from_file_location("hf_iqlearn", os.path.join(ROOT, "examples", "hf_iqlearn.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_iqlearn = load_example()


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return save_random_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=64)


def hf_model(folder: str):
    return transformers.GPT2LMHeadModel.from_pretrained(folder).eval()  # eval: no dropout, as ours


def examples(seed: int = 1) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) id lists of different lengths; no id is EOS."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, EOS, (n_prompt,), generator=g).tolist(),
             torch.randint(0, EOS, (n_response,), generator=g).tolist())
            for n_prompt, n_response in ((3, 9), (5, 4), (1, 14), (6, 2))]


def with_cut_row(batch: dict, width_tokens: list[int], n_prompt: int) -> dict:
    """The batch plus a row that fills its width and has no EOS: a window cut from running text."""
    labels = torch.tensor([IGNORE_HF] * n_prompt + width_tokens[n_prompt:])
    return {"input_ids": torch.cat([batch["input_ids"], torch.tensor([width_tokens])]),
            "attention_mask": torch.cat([batch["attention_mask"], torch.ones(1, len(width_tokens), dtype=torch.long)]),
            "labels": torch.cat([batch["labels"], labels[None]])}


def batch_and_items():
    """One batch two ways: Hugging Face's (input_ids, attention_mask, labels, padded with EOS) and
    our data.py Items, which collate turns into (x, y, done) independently of the example (with the
    last state: every action's next state computed, the cut row's last action too)."""
    pairs = examples()
    batch = hf_iqlearn.batch_from_ids(pairs, EOS, pad_id=EOS)
    width = batch["input_ids"].size(1)
    cut = torch.randint(0, EOS, (width,), generator=torch.Generator().manual_seed(2)).tolist()
    batch = with_cut_row(batch, cut, n_prompt=2)
    items = [Item(np.array(p + r + [EOS]), len(p), True) for p, r in pairs] + [Item(np.array(cut), 2, False)]
    return batch, items


def grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def test_the_batch_is_what_collate_makes_labels_shifted_and_eos_terminal():
    batch, items = batch_and_items()
    x, y, done = (torch.from_numpy(a) for a in collate(items, with_last_state=True))
    targets, hf_done = hf_iqlearn.targets_and_done(batch["labels"], EOS)
    assert torch.equal(targets, torch.where(y == IGNORE, IGNORE_HF, y))  # prompt and padding ignored
    assert torch.equal(hf_done, done)  # the EOS action, kept although padding is EOS too
    assert done.sum() == 4 and torch.equal(batch["input_ids"][y != IGNORE], x[y != IGNORE])
    assert targets[-1, -2] != IGNORE_HF  # the cut row keeps its last action: its next state is the last column


def test_at_lambda_zero_it_is_the_models_own_labels_loss_in_value_and_gradient(gpt2_folder):
    model = hf_model(gpt2_folder)
    batch, _ = batch_and_items()
    expected = model(**batch).loss  # transformers' causal-LM loss: it shifts and ignores -100 inside
    expected.backward()
    expected_grads = grads(model)
    model.zero_grad()
    head = hf_iqlearn.ValueOffset(model.config.n_embd)
    loss, stats = hf_iqlearn.iqlearn_step(model, batch, EOS, lam=0.0, gamma=0.9, head=head)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert float(stats["td"]) > 0  # computed, weighted by zero
    # softmax ignores the offset: sum_a (softmax - onehot) = 0 makes its gradient zero, up to float rounding
    assert all(float(p.grad.abs().max()) < 1e-6 for p in head.parameters())


@pytest.mark.parametrize("value_head", [False, True])
def test_at_lambda_above_zero_it_is_our_loss_on_our_model_with_the_same_weights(gpt2_folder, value_head):
    theirs = hf_model(gpt2_folder)
    ours = model_from_checkpoint(gpt2_checkpoint(gpt2_folder, value_head=value_head)).eval()  # --init_from's path
    head = hf_iqlearn.ValueOffset(theirs.config.n_embd) if value_head else None
    if value_head:  # a head that has trained: the same nonzero offset in both models
        with torch.no_grad():
            head.v.weight.normal_(0, 0.5)
            head.v.bias.fill_(3.0)
            ours.value_head.weight.copy_(head.v.weight)
            ours.value_head.bias.copy_(head.v.bias)
    batch, items = batch_and_items()
    loss, stats = hf_iqlearn.iqlearn_step(theirs, batch, EOS, lam=0.5, gamma=0.9, head=head)
    loss.backward()
    x, y, done = (torch.from_numpy(a) for a in collate(items, with_last_state=True))
    expected, expected_stats = iqlearn_loss(ours(x), y, lam=0.5, gamma=0.9, done=done, ignore_index=IGNORE)
    expected.backward()

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["td"], expected_stats["td"], rtol=1e-5, atol=1e-5)
    pairs = [("transformer.wte.weight", "wte.weight", False), ("transformer.ln_f.bias", "ln_f.bias", False),
             ("transformer.h.1.mlp.c_fc.weight", "blocks.1.mlp.c_fc.weight", True),  # Conv1D: [in, out]
             ("transformer.h.0.attn.c_attn.bias", "blocks.0.attn.c_attn.bias", False)]
    theirs_g, ours_g = grads(theirs), grads(ours)
    for hf_name, our_name, transposed in pairs:
        g = ours_g[our_name].t() if transposed else ours_g[our_name]
        torch.testing.assert_close(theirs_g[hf_name], g, rtol=1e-4, atol=1e-6, msg=hf_name)
    if value_head:
        torch.testing.assert_close(head.v.weight.grad, ours.value_head.weight.grad, rtol=1e-4, atol=1e-6)
        assert float(head.v.weight.grad.abs().max()) > 0  # at lam > 0 the head learns


@pytest.mark.parametrize("argv,message", [(["--lambda", "-1"], "lam must be a finite number >= 0"),
                                          (["--gamma", "1.5"], "gamma must be in [0, 1]"),
                                          (["--steps", "0"], "--steps and --batch_size must be >= 1")])
def test_the_examples_bad_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        hf_iqlearn.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
