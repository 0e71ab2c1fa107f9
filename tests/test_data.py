"""File loading, masks, the batch stream, greedy accuracy and the online policy samples (the
built-in task itself: test_task.py)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import data
from data import IGNORE, Batches, DataError, Vocab, collate, load_dataset
from task import TaskConfig


def test_masks_prompt_eos_terminal_and_padding():
    vocab = Vocab(None)
    long = data.pair_item(vocab, "Q: two plus two?\n", "It is 4.")
    short = data.pair_item(vocab, "Hi\n", "ok")
    x, y, done = collate([long, short])
    n_prompt, n = long.n_prompt, len(long.tokens)
    assert x.shape == y.shape == done.shape == (2, n - 1)
    assert (y[0, :n_prompt - 1] == IGNORE).all()             # predicting prompt tokens: masked
    assert (y[0, n_prompt - 1:] == long.tokens[n_prompt:]).all()  # response + EOS: actions
    assert y[0, -1] == vocab.eos and done[0, -1] and done[0].sum() == 1
    m = len(short.tokens) - 1
    assert (y[1, m:] == IGNORE).all() and not done[1, m:].any()   # padding
    assert done[1, m - 1] and y[1, m - 1] == vocab.eos
    assert (x[0] == long.tokens[:-1]).all()


def test_compact_vocab_round_trips_and_names_unknown_tokens():
    vocab = Vocab(data.gpt2().encode_ordinary("the cat sat"))
    assert vocab.size == 4  # three tokens and EOS
    assert vocab.decode(vocab.encode("the cat sat")) == "the cat sat"
    with pytest.raises(DataError, match="'dog'|' dog'"):
        vocab.encode("the dog")
    assert Vocab(None).size % 64 == 0 and Vocab(None).size >= 50257


def test_gsm8k_and_prompt_response_jsonl(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})
                             for i in range(40)) + "\n\n")
    ds = load_dataset({"data": str(gsm)}, block_size=64)
    assert ds.kind == "pairs" and ds.checkable
    assert len(ds.train) + len(ds.val) == 40 and len(ds.val) == 2
    assert ds.records["val"][0]["prompt"].endswith("?\n")
    pr = tmp_path / "pr.jsonl"
    pr.write_text("\n".join(json.dumps({"prompt": "Say hi:", "response": " hi" * (i + 1)}) for i in range(10)))
    ds = load_dataset({"data": str(pr), "val_data": str(pr)}, block_size=8)
    assert not ds.checkable
    assert len(ds.val) == 10 - ds.n_dropped // 2 and ds.n_dropped > 0  # long ones dropped


@pytest.mark.parametrize("content,match", [
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a"\n', r":2: not valid JSON"),
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', r":2: expected string fields"),
    ('[1, 2]\n', r":1: expected"),
    ('   \n', "empty"),
])
def test_malformed_jsonl_names_the_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_dataset({"data": str(path)}, block_size=32)


def test_missing_file_and_nothing_fits(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset({"data": str(tmp_path / "nope.jsonl")}, block_size=32)
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": "x " * 50, "response": "y"}) for _ in range(4)))
    with pytest.raises(DataError, match="block_size"):
        load_dataset({"data": str(path)}, block_size=16)


def test_text_windows_are_all_actions_without_terminals(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("to be or not to be, that is the question. " * 40)
    ds = load_dataset({"data": str(path)}, block_size=16)
    assert ds.kind == "text" and {len(it.tokens) for it in ds.train + ds.val} == {17}
    x, y, done = collate(ds.train[-3:])
    assert x.shape == (3, 16)
    assert (y != IGNORE).all() and not done.any()
    assert (x[0, 1:] == y[0, :-1]).all()


def test_a_cut_row_shorter_than_the_batch_loses_its_last_target():
    cut = data.Item(np.array([5, 6, 7]), 1, False)
    full = data.Item(np.array([1, 2, 3, 4, 5]), 1, False)
    x, y, done = collate([cut, full])
    assert y[0].tolist() == [6, IGNORE, IGNORE, IGNORE]  # 7's next state is padding
    assert y[1].tolist() == [2, 3, 4, 5]                 # the window's own end stays


def test_batches_resume_exactly_and_ranks_are_disjoint():
    items = [data.Item(np.array([i, i + 1]), 0, False) for i in range(23)]
    a = Batches(items, 5, seed=3)
    for _ in range(7):
        a.next()
    b = Batches(items, 5, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        assert a.next() == b.next()
    r0, r1 = Batches(items, 4, seed=1, rank=0, world=2), Batches(items, 4, seed=1, rank=1, world=2)
    seen0 = {int(it.tokens[0]) for it in r0.next() + r0.next()}
    seen1 = {int(it.tokens[0]) for it in r1.next() + r1.next()}
    assert len(seen0) == len(seen1) == 8 and not seen0 & seen1


def test_answer_checking():
    assert data.is_correct("so 3 + 4 = 7\n#### 7", "#### 7")
    assert data.is_correct("#### 1,200", "#### 1200")
    assert not data.is_correct("#### 8", "#### 7")
    assert not data.is_correct("the answer is 7", "#### 7")
    assert data.extract_answer("#### 3\n#### -4.5") == -4.5


def test_collate_masks_by_hand():
    EOS = 9
    pair = data.Item(np.array([1, 2, 3, 4, EOS]), 2, True)     # prompt 1 2, response 3 4, EOS
    short = data.Item(np.array([5, 6, EOS]), 1, True)          # ends early: padding after its EOS
    window = data.Item(np.array([7, 8, 7, 8, 7]), 0, False)    # running text filling the batch
    x, y, done = collate([pair, short, window], pad_id=0)
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0], [7, 8, 7, 8]]
    assert y.tolist() == [[IGNORE, 3, 4, EOS], [6, EOS, IGNORE, IGNORE], [8, 7, 8, 7]]
    assert done.tolist() == [[False, False, False, True], [False, True, False, False], [False] * 4]
    x, y, done = collate([data.Item(np.array([1, 2]), 1, True)], pad_id=5)   # no response, just EOS
    assert x.tolist() == [[1]] and y.tolist() == [[2]] and done.tolist() == [[True]]


def test_collate_with_the_last_state_keeps_every_target_and_the_state_after_it():
    EOS = 9
    cut = data.Item(np.array([1, 2, 3, 4]), 2, False)         # a sample cut off before EOS
    done_row = data.Item(np.array([5, 6, EOS]), 1, True)
    x, y, done = collate([cut, done_row], pad_id=0, with_last_state=True)
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, EOS, 0]]        # the last token is an input too
    assert y.tolist() == [[IGNORE, 3, 4, IGNORE], [6, EOS, IGNORE, IGNORE]]  # the cut row keeps target 4
    assert done.tolist() == [[False] * 4, [False, True, False, False]]
    x, y, _ = collate([cut, done_row], pad_id=0)               # without: no input after token 3
    assert x.tolist() == [[1, 2, 3], [5, 6, 0]] and y.tolist() == [[IGNORE, 3, 4], [6, EOS, IGNORE]]
    longer = data.Item(np.array([1, 2, 3, 4, 5, 6]), 1, False)  # and beside a longer row it loses 4
    assert collate([cut, longer])[1][0].tolist() == [IGNORE, 3, IGNORE, IGNORE, IGNORE]
    assert collate([cut, longer], with_last_state=True)[1][0].tolist() == [IGNORE, 3, 4, IGNORE, IGNORE, IGNORE]


def test_batches_visit_every_item_once_per_epoch_across_epoch_boundaries():
    items = [data.Item(np.array([i]), 0, False) for i in range(10)]
    stream = Batches(items, 4, seed=5)
    seen = [int(it.tokens[0]) for _ in range(5) for it in stream.next()]  # 20 = two epochs
    assert len(seen) == 20 and sorted(seen[:10]) == sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]                     # a fresh order each epoch
    assert stream.state_dict() == {"epoch": 1, "cursor": 10}  # the next epoch starts on the next call
    # two ranks split each epoch's order between them: together they cover it exactly once
    r0, r1 = Batches(items, 5, seed=1, rank=0, world=2), Batches(items, 5, seed=1, rank=1, world=2)
    assert sorted(int(it.tokens[0]) for it in r0.next() + r1.next()) == list(range(10))
    with pytest.raises(DataError, match="processes"):
        Batches(items[:1], 4, seed=0, world=2)
    assert len(Batches(items[:2], 1, seed=0, rank=1, world=2).next()) == 1   # one item per process is enough


def test_answer_extraction_edge_cases():
    assert data.extract_answer("#### $1,234.5") == 1234.5
    assert data.extract_answer("####-3") == -3
    assert data.extract_answer("the answer is 7") is None
    assert data.extract_answer("#### 2\nmore #### 10") == 10
    assert not data.is_correct("#### 3", "no number here")   # an uncheckable reference is never matched
    assert not data.is_correct("no number", "no number either")
    assert data.is_correct("#### 12.0", "#### 12")


# --- online IQLearn's data: the policy's own samples ----------------------------------------------

def test_policy_samples_are_the_model_s_continuations_of_the_expert_prompts():
    from model import GPT, GPTConfig
    spec = {"data": None, "val_data": None, "full_vocab": False,
            "task": dataclasses.asdict(TaskConfig(n_train=20, n_val=5, n_test=5))}
    dataset = load_dataset(spec, 96)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dataset.vocab.size, block_size=96, n_layer=1, n_head=2, n_embd=32))
    expert = dataset.train[:6]
    torch.manual_seed(1)
    policy = data.policy_samples(model, expert, dataset)
    prompts = [e.tokens[:e.n_prompt].tolist() for e in expert]
    budget = max(len(e.tokens) - e.n_prompt for e in expert)
    torch.manual_seed(1)
    expected = model.generate(prompts, budget, temperature=1.0, eos_id=dataset.vocab.eos)
    for p, e, prompt, cont in zip(policy, expert, prompts, expected):
        assert p.tokens.tolist() == prompt + cont and p.n_prompt == e.n_prompt
        assert p.terminal == (cont[-1] == dataset.vocab.eos)
        assert p.tokens.tolist() != e.tokens.tolist()  # an untrained model does not write the expert's answer
    assert model.training


def test_policy_samples_are_drawn_in_eval_mode():
    """With dropout on, the online sampler must sample from the model as evaluated (dropout off)
    and hand it back in training mode: the same draws as an eval-mode model with the same seed."""
    from model import GPT, GPTConfig
    spec = {"data": None, "val_data": None, "full_vocab": False,
            "task": dataclasses.asdict(TaskConfig(n_train=20, n_val=5, n_test=5))}
    dataset = load_dataset(spec, 96)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dataset.vocab.size, block_size=96, n_layer=1, n_head=2, n_embd=32,
                          dropout=0.5)).train()
    expert = dataset.train[:4]
    torch.manual_seed(1)
    policy = data.policy_samples(model, expert, dataset)
    assert model.training
    prompts = [e.tokens[:e.n_prompt].tolist() for e in expert]
    model.eval()
    torch.manual_seed(1)
    expected = model.generate(prompts, max(len(e.tokens) - e.n_prompt for e in expert), temperature=1.0,
                              eos_id=dataset.vocab.eos)
    assert [p.tokens[p.n_prompt:].tolist() for p in policy] == expected
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        noisy = model.generate(prompts, len(expected[0]), temperature=1.0, eos_id=dataset.vocab.eos)
    assert noisy != expected  # dropout does change the draws: the check above can fail


def test_length_chunks_sort_cut_and_weight_rows_by_their_actions():
    EOS = 9
    rows = [data.Item(np.array([1] * n + [EOS]), p, True) for n, p in [(6, 2), (2, 1), (9, 3), (4, 0)]]
    # actions per row, by hand (len - 1 - max(n_prompt - 1, 0)): 5, 2, 7, 4
    chunks = data.length_chunks(rows, 2)
    assert [[len(it.tokens) for it in chunk] for chunk, _ in chunks] == [[3, 5], [7, 10]]
    # the short pair has 2 + 4 = 6 actions, the long pair 5 + 7 = 12: shares 1/3 and 2/3
    assert [share for _, share in chunks] == pytest.approx([6 / 18, 12 / 18])
    for chunk, _ in chunks:   # collate agrees on each chunk's action count
        assert int((collate(chunk)[1] != IGNORE).sum()) == sum(len(it.tokens) - 1 - max(it.n_prompt - 1, 0)
                                                               for it in chunk)
    assert data.length_chunks(rows, 1) == [(rows, 1.0)]
    assert len(data.length_chunks(rows, 9)) == 4             # no more chunks than rows
    window = data.Item(np.array([1, 2, 3]), 0, False)        # a row without a terminal: one chunk
    assert data.length_chunks(rows + [window], 2) == [(rows + [window], 1.0)]


def test_a_data_position_outside_the_data_is_refused_not_looped_on():
    """A checkpoint's position past the epoch's end (another run's data, a damaged file) used to make
    next() loop for ever; it is one clear error."""
    items = [data.Item(np.array([i, i + 1]), 0, False) for i in range(10)]
    stream = Batches(items, 4, seed=0)
    for bad in ({"epoch": 0, "cursor": 11}, {"epoch": -1, "cursor": 0}, {"epoch": 0, "cursor": -2}):
        with pytest.raises(DataError, match="data position"):
            stream.load_state_dict(bad)
    stream.load_state_dict({"epoch": 2, "cursor": 10})        # an epoch's very end is fine
    assert len(stream.next()) == 4
