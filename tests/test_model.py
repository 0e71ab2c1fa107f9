"""The transformer: shapes, causality, tying, init, the KV cache, the optimizer, the parameter and
memory counts."""

import math

import pytest
import torch

from model import GPT, GPTConfig


def tiny(vocab=37, block=16, n_layer=2, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, n_embd=16, **kw))


def test_logits_at_every_position():
    model = tiny()
    idx = torch.randint(0, 37, (3, 10))
    assert model(idx).shape == (3, 10, 37)


def test_causal_logits_do_not_see_the_future():
    model = tiny(n_layer=3)
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 37
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-4


def test_too_long_input_is_a_value_error():
    model = tiny(block=8)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_lm_head_is_tied_to_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()
    # Counted from the architecture, not from the module: token table V*C and position table B*C
    # (the tied head adds nothing), then per block two LayerNorm weights (2C, no biases), q/k/v and
    # the attention projection (3C*C + C*C) and the MLP (4C*C twice), then the final LayerNorm.
    V, B, L, C = 37, 16, 2, 16
    total = V * C + B * C + L * (2 * C + 4 * C * C + 8 * C * C) + C
    assert total == 7072
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - B * C  # the position table left out, as in the 6N rule


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=128))
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    proj = model.blocks[0].mlp.c_proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


def test_kv_cache_gives_the_same_logits_as_a_full_forward():
    model = tiny(n_layer=3).eval()
    idx = torch.randint(0, 37, (2, 11))
    full = model(idx)
    cache = model.new_cache(n_pad=torch.zeros(2, dtype=torch.long))
    parts = [model(idx[:, :5], cache)] + [model(idx[:, t:t + 1], cache) for t in range(5, 11)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_matches_each_prompt_alone():
    model = tiny().eval()
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    together = model.generate(prompts, max_new_tokens=6, temperature=0)
    alone = [model.generate([p], max_new_tokens=6, temperature=0)[0] for p in prompts]
    assert together == alone
    # and greedy generation is argmax of a full forward, token by token
    seq = list(prompts[1])
    for _ in range(6):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert together[1] == seq[2:]


def test_generate_stops_at_eos_and_at_block_size():
    model = tiny(block=10).eval()
    out = model.generate([[1, 2, 3]], max_new_tokens=50, temperature=0)
    assert len(out[0]) == 7  # the block is full
    first = out[0][0]
    assert model.generate([[1, 2, 3]], max_new_tokens=50, temperature=0, eos_id=first) == [[first]]


def test_sampling_is_reproducible_with_a_generator_and_respects_top_k():
    model = tiny().eval()
    draw = lambda seed, **kw: model.generate([[1, 2]] * 4, 8, temperature=1.0,
                                             generator=torch.Generator().manual_seed(seed), **kw)
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    top = model(torch.tensor([[1, 2]]))[0, -1].argmax().item()
    assert all(row[0] == top for row in draw(5, top_k=1))


def test_sampling_draws_what_a_full_recompute_of_every_row_draws_while_finished_rows_are_dropped():
    """generate drops rows that have ended from its cache; every row must still get the draw it
    would get if all rows ran to the end. The reference: no cache, the whole batch recomputed and
    sampled at every step, rows kept running after their EOS."""
    from model import cut_after_eos, sample_next
    model = tiny(vocab=7, block=40).eval()
    eos = 6
    with torch.no_grad():
        model.lm_head.weight[eos] *= 0  # EOS at logit 0 among small ones: rows end at varied steps
    prompts = [[i % 5, (i * 3) % 5, 1] for i in range(24)]   # equal lengths: no padding needed
    for temperature, top_k in [(1.0, None), (0.8, 3)]:
        g = torch.Generator().manual_seed(11)
        seqs, finished = torch.tensor(prompts), torch.zeros(len(prompts), dtype=torch.bool)
        with torch.no_grad():
            while not finished.all() and seqs.size(1) < 40:
                token = sample_next(model(seqs)[:, -1].float(), temperature, top_k, g)
                seqs, finished = torch.cat([seqs, token], 1), finished | (token[:, 0] == eos)
        expected = [cut_after_eos(row[3:], eos) for row in seqs.tolist()]
        lengths = sorted(len(row) for row in expected)
        assert lengths[0] < lengths[len(lengths) // 2] < lengths[-1]  # rows did end at different steps
        got = model.generate(prompts, 37, temperature, top_k, eos, torch.Generator().manual_seed(11))
        assert got == expected


def test_optimizer_decays_only_matrices():
    model = tiny(bias=True)
    opt = model.configure_optimizer(weight_decay=0.1, learning_rate=1e-3)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params(non_embedding=False)


def test_cache_reorder_follows_rows_like_a_fresh_run():
    model = tiny().eval()
    idx = torch.randint(0, 37, (3, 6))
    cache = model.new_cache(n_pad=torch.zeros(3, dtype=torch.long))
    model(idx[:, :5], cache)
    rows = torch.tensor([2, 2, 0])
    cache.reorder(rows)
    step = model(idx[rows, 5:6], cache)
    torch.testing.assert_close(step, model(idx[rows])[:, 5:6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


# --- the value head: Q(s, .) = lm_head(h) + v(h) ---------------------------------------------------

def with_head_set(model: GPT) -> GPT:
    """A head model whose head is not zero, so a test sees what the head does."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.value_head.weight, std=1.0)
    torch.nn.init.normal_(model.value_head.bias, std=1.0)
    return model


def test_value_head_starts_at_zero_and_shifts_every_logit_of_a_state_alike():
    plain, headed = tiny(), tiny(value_head=True)
    idx = torch.randint(0, 37, (2, 9))
    torch.testing.assert_close(headed(idx), plain(idx), atol=0, rtol=0)  # zero-initialised
    with_head_set(headed)
    shift = headed(idx) - plain(idx)  # v(s_t) at every position, the same for every token
    assert shift.abs().min() > 1e-3
    torch.testing.assert_close(shift, shift[..., :1].expand_as(shift), atol=1e-5, rtol=0)
    torch.testing.assert_close(headed(idx).softmax(-1), plain(idx).softmax(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(headed(idx, last_only=True), headed(idx)[:, -1:], atol=1e-6, rtol=1e-6)


def test_value_head_gets_no_gradient_from_mle_and_a_gradient_from_td():
    from iqlearn import iqlearn_loss
    model = with_head_set(tiny(value_head=True))
    idx = torch.randint(0, 37, (3, 10))
    targets = torch.randint(0, 37, (3, 10))

    def head_and_body_grads(lam):
        model.zero_grad()
        iqlearn_loss(model(idx), targets, lam=lam)[0].backward()
        return model.value_head.weight.grad.abs().max(), model.wte.weight.grad.abs().max()

    head, body = head_and_body_grads(0.0)
    assert body > 1e-3 and head < 1e-6 * body  # zero up to rounding: softmax - onehot sums to 0
    head, body = head_and_body_grads(0.5)
    assert head > 1e-3


# --- the KV cache and decoding helpers, by hand ---------------------------------------------------

def test_cache_positions_and_mask_with_left_padding_by_hand():
    # a second call (slots 2, 3) for rows with 0, 1 and 2 pad tokens
    pos, mask = GPT._cached_positions_and_mask(torch.tensor([2, 3]), torch.tensor([0, 1, 2]))
    assert pos.tolist() == [[2, 3], [1, 2], [0, 1]]        # counted from each row's first real token
    assert mask.shape == (3, 1, 2, 4)
    assert mask[:, 0].int().tolist() == [[[1, 1, 1, 0], [1, 1, 1, 1]],
                                         [[0, 1, 1, 0], [0, 1, 1, 1]],
                                         [[0, 0, 1, 0], [0, 0, 1, 1]]]
    # a first call over a row that is all padding but its last slot: pads see only themselves
    pos, mask = GPT._cached_positions_and_mask(torch.tensor([0, 1, 2]), torch.tensor([2]))
    assert pos.tolist() == [[0, 0, 0]]
    assert mask[0, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_layer_cache_extend_appends_and_returns_everything_so_far():
    from model import LayerKV
    layer = LayerKV(max_len=5)
    k1, v1 = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    k, v = layer.extend(k1, v1)
    assert torch.equal(k, k1) and torch.equal(v, v1) and layer.length == 3
    k2, v2 = torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4)
    k, v = layer.extend(k2, v2)
    assert torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    assert layer.length == 4 and layer.k.shape == (2, 1, 5, 4)


def test_cache_reorder_copies_rows_and_their_padding():
    from model import KVCache
    cache = KVCache(2, 4, torch.tensor([0, 1, 2]))
    for layer in cache.layers:
        layer.extend(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 1).clone(), torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 1) + 10)
    cache.reorder(torch.tensor([2, 0, 0]))
    assert cache.n_pad.tolist() == [2, 0, 0]
    empty = KVCache(2, 4, torch.tensor([0, 3]))  # before any forward: only the padding moves
    empty.reorder(torch.tensor([1, 0]))
    assert empty.n_pad.tolist() == [3, 0] and all(layer.k is None for layer in empty.layers)
    for layer in cache.layers:
        assert layer.k[:, 0, :2, 0].tolist() == [[2, 2], [0, 0], [0, 0]]
        assert layer.v[:, 0, :2, 0].tolist() == [[12, 12], [10, 10], [10, 10]]


def test_left_pad_and_cut_after_eos_by_hand():
    from model import cut_after_eos, left_pad
    idx, n_pad = left_pad([[1, 2, 3], [4], [5, 6]], "cpu", pad_id=9)
    assert idx.tolist() == [[1, 2, 3], [9, 9, 4], [9, 5, 6]] and n_pad.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], "cpu")
    assert cut_after_eos([3, 0, 4, 0], 0) == [3, 0]
    assert cut_after_eos([3, 4], 0) == [3, 4] and cut_after_eos([3, 0], None) == [3, 0]


def test_sample_next_greedy_temperature_and_top_k():
    from model import sample_next
    logits = torch.tensor([[0.0, math.log(3.0), -1.0], [2.0, 0.0, 1.0]])
    assert sample_next(logits, 0, None, None).tolist() == [[1], [0]]
    g = torch.Generator().manual_seed(0)
    many = logits.repeat(3000, 1)                 # rows 0, 2, 4, ... are row 0: 3000 draws each
    draws = sample_next(many, 1.0, None, g).view(3000, 2).T
    # row 0 at temperature 1: p = (1, 3, e^-1) / (4 + e^-1); at temperature 0.5 the odds square
    p1 = 3 / (4 + math.exp(-1))
    assert abs((draws[0] == 1).float().mean().item() - p1) < 0.03
    cold = sample_next(many, 0.5, None, g).view(3000, 2).T
    assert abs((cold[0] == 1).float().mean().item() - 9 / (10 + math.exp(-2))) < 0.03
    top2 = sample_next(many, 1.0, 2, g).view(3000, 2).T
    assert set(top2[0].tolist()) == {0, 1} and set(top2[1].tolist()) == {0, 2}
    assert abs((top2[0] == 1).float().mean().item() - 0.75) < 0.03   # renormalised over the two
