"""gail.py: each equation against an independent computation, then tiny runs end to end."""

import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gail
import sample
from conftest import TINY
from data import IGNORE, Item, collate
from gail import (GailConfig, answer_accuracy, answer_positions, discriminator_loss, shuffled_rewards, kl_to_reference, leave_one_out_baseline, policy_loss,
                  reward_from_logits, reward_to_go)

ONLY_PG = GailConfig(mle_weight=0.0, kl_coef=0.0, entropy_coef=0.0)


# ----------------------------------------------------------------------------------------------
# The equations

def test_discriminator_loss_on_a_hand_worked_case():
    # Row 0 is the expert's: a prompt position (ignored), then actions 0 and 2 with d = 0 and ln 3.
    # Row 1 is the policy's: one action (token 1) with d = ln 3, then padding (ignored).
    d = torch.full((2, 3, 3), 50.0)  # what is not the taken action, or not an action, must not count
    d[0, 1, 0], d[0, 2, 2], d[1, 0, 1] = 0.0, math.log(3), math.log(3)
    y = torch.tensor([[IGNORE, 0, 2], [1, IGNORE, IGNORE]])
    loss, accuracy = discriminator_loss(d, y, torch.tensor([True, False]))
    # expert: -log sigmoid(0) = ln 2, -log sigmoid(ln 3) = -log(3/4); policy: -log(1 - 3/4) = ln 4
    assert float(loss) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2 + math.log(4))
    # D > 1/2 on one of the two expert actions; D < 1/2 on none of the policy's
    assert float(accuracy) == pytest.approx((1 / 2 + 0) / 2)


def test_answer_accuracy_scores_only_the_tokens_after_the_marker():
    # tokens: 7 is "####", 9 is EOS. Row 0 (expert): 3 7 4 5 9 -> the answer is 4 5; row 1 (policy):
    # 7 6 9 IGNORE -> the answer is 6; row 2 (policy) has no marker, so no answer.
    y = torch.tensor([[3, 7, 4, 5, 9], [7, 6, 9, IGNORE, IGNORE], [3, 4, 5, 9, IGNORE]])
    answer = answer_positions(y, marker=7, eos=9)
    assert answer.tolist() == [[False, False, True, True, False], [False, True, False, False, False], [False] * 5]
    assert not answer_positions(y, marker=None, eos=9).any()
    d = torch.full((3, 5, 10), -50.0)   # every other position is scored wrong; it must not count
    d[0, 2, 4], d[0, 3, 5], d[1, 1, 6] = 1.0, -1.0, -2.0   # expert: one of two right; policy: right
    acc = answer_accuracy(d, y, torch.tensor([True, False, False]), answer)
    assert float(acc) == pytest.approx((1 / 2 + 1) / 2)


def test_the_shuffled_control_keeps_no_mean_reward_and_only_moves_rewards_between_actions():
    torch.manual_seed(0)
    is_action = torch.rand(4, 9) < 0.7
    rewards = torch.where(is_action, torch.randn(4, 9) - 3.0, 0.0)   # mean about -3: a length signal
    out = shuffled_rewards(rewards, is_action)
    assert (out[~is_action] == 0).all() and abs(float(out[is_action].sum())) < 1e-4
    centred = rewards[is_action] - rewards[is_action].mean()
    torch.testing.assert_close(out[is_action].sort().values, centred.sort().values)


def test_the_reward_is_the_logit_log_D_minus_log_one_minus_D():
    D = torch.tensor([[0.8, 0.3, 0.5]])
    y = torch.tensor([[2, 0, IGNORE]])
    d = torch.zeros(1, 3, 4)
    d[0, 0, 2], d[0, 1, 0], d[0, 2, 1] = (torch.log(D / (1 - D)))[0]
    d[0, 0, 1] = 7.0  # another token's logit: not the reward
    r = reward_from_logits(d, y)
    expected = torch.log(D) - torch.log(1 - D)
    assert r[0, :2].tolist() == pytest.approx(expected[0, :2].tolist())
    assert r[0, 0] == pytest.approx(math.log(4)) and r[0, 2] == 0  # D = 0.8: ln 4; not an action: 0


def test_reward_to_go_discounts_and_stops_at_a_terminal():
    gamma = 0.5
    r = torch.tensor([[9.0, 1.0, 2.0, 4.0, 9.0],    # prompt, three actions ending in EOS, padding
                      [1.0, 1.0, 1.0, 1.0, 1.0],    # a sample cut before EOS: all five are actions
                      [1.0, 2.0, 3.0, 4.0, 9.0]])   # terminal at t = 1, then a new episode t = 2, 3
    is_action = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    done = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    G = reward_to_go(r, is_action, done, gamma)
    assert G[0].tolist() == pytest.approx([0, 1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4, 0])
    assert G[1].tolist() == pytest.approx([sum(gamma ** k for k in range(5 - t)) for t in range(5)])
    assert G[2].tolist() == pytest.approx([1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4, 0])


def test_the_baseline_is_the_other_samples_mean_at_the_same_response_step():
    # Prompts of different lengths: response step k sits at position n_prompt - 1 + k.
    starts, lengths = [0, 2, 1], [3, 2, 3]
    T = 5
    G = torch.randn(3, T)
    is_action = torch.zeros(3, T, dtype=torch.bool)
    for b, (s, n) in enumerate(zip(starts, lengths)):
        is_action[b, s:s + n] = True
    b_t = leave_one_out_baseline(G, is_action)
    for b, (s, n) in enumerate(zip(starts, lengths)):
        for k in range(n):
            others = [float(G[o, starts[o] + k]) for o in range(3) if o != b and k < lengths[o]]
            expected = sum(others) / len(others) if others else 0.0
            assert float(b_t[b, s + k]) == pytest.approx(expected, abs=1e-6)
    assert b_t[~is_action].abs().sum() == 0


def test_policy_gradient_sign_a_token_with_positive_advantage_gains_probability():
    torch.manual_seed(0)
    for sign in (+1.0, -1.0):
        logits = torch.randn(2, 1, 5).requires_grad_()   # row 0: an expert row, row 1: the sample
        y = torch.tensor([[3], [2]])
        before = F.softmax(logits[1, 0], -1)[2].item()
        loss, _ = policy_loss(logits, torch.zeros(1, 1, 5), y, torch.tensor([[sign]]), 1, ONLY_PG)
        loss.backward()
        with torch.no_grad():
            logits -= 0.1 * logits.grad
        after = F.softmax(logits[1, 0], -1)[2].item()
        assert (after - before) * sign > 0


def test_a_perfect_baseline_with_a_constant_reward_gives_zero_policy_gradient():
    # Every sample has 4 actions (after prompts of different lengths) and reward 0.7 on each: the
    # reward-to-go at step k is the same for all, the baseline predicts it, the advantage is 0.
    torch.manual_seed(0)
    is_action = torch.zeros(3, 7, dtype=torch.bool)
    for b, s in enumerate((0, 2, 3)):
        is_action[b, s:s + 4] = True
    done = torch.zeros_like(is_action)
    done[torch.arange(3), torch.tensor([3, 5, 6])] = True
    G = reward_to_go(torch.full((3, 7), 0.7), is_action, done, 0.9)
    advantages = G - leave_one_out_baseline(G, is_action)
    assert advantages.abs().max() < 1e-6
    logits = torch.randn(4, 7, 6).requires_grad_()
    y = torch.full((4, 7), IGNORE)
    y[0, 2] = 1
    y[1:][is_action] = torch.randint(0, 6, (int(is_action.sum()),))
    loss, stats = policy_loss(logits, torch.zeros(3, 7, 6), y, advantages, 1, ONLY_PG)
    loss.backward()
    assert logits.grad.abs().max() < 1e-6 and abs(float(stats["pg"])) < 1e-6  # float32 rounding


def test_the_kl_term_is_zero_at_the_start_and_its_gradient_pulls_a_drifted_policy_back():
    torch.manual_seed(0)
    ref = torch.randn(2, 3, 7)
    mask = torch.ones(2, 3, dtype=torch.bool)
    at_start = ref.clone().requires_grad_()
    kl = kl_to_reference(at_start, ref, mask)
    kl.backward()
    assert kl.item() == pytest.approx(0.0, abs=1e-6) and at_start.grad.abs().max() < 1e-7
    # Drifted: the exact KL matches an independent one, and descending it moves pi back to pi_ref.
    logits = (ref + torch.randn(2, 3, 7)).requires_grad_()
    p, q = F.softmax(logits, -1), F.softmax(ref, -1)
    independent = (p * (p.log() - q.log())).sum(-1).mean()
    assert kl_to_reference(logits, ref, mask).item() == pytest.approx(independent.item(), rel=1e-5)
    distance = lambda: (F.softmax(logits, -1) - q).abs().sum().item()
    distances = [distance()]
    for _ in range(30):
        logits.grad = None
        kl_to_reference(logits, ref, mask).backward()
        with torch.no_grad():
            logits -= 6.0 * logits.grad  # 6 states averaged: about 1 per state
        distances.append(distance())
    assert all(b < a for a, b in zip(distances, distances[1:])) and distances[-1] < 0.1 * distances[0]
    # The sampled log-ratio's gradient averages to zero: E_{a~pi}[grad log pi(a)] = sum_a grad pi(a) = 0.
    logits.grad = None
    logp = F.log_softmax(logits, -1)
    (logp.exp().detach() * (logp - F.log_softmax(ref, -1))).sum().backward()
    assert logits.grad.abs().max() < 1e-6


def test_prompt_and_padding_are_never_scored():
    # An expert row and two samples (one ending in EOS, one cut before it) after prompts of different
    # lengths, batched by collate with the cut sample's last state kept.
    eos = 5
    items = [Item(np.array([1, 2, 3, 4, eos]), 2, True), Item(np.array([1, 2, 3, 4, 4, 4, eos]), 3, True),
             Item(np.array([1, 2, 0, 1]), 2, False)]
    x, y, done = (torch.from_numpy(a) for a in collate(items, with_last_state=True))
    assert y[2, 2] == 1  # the cut sample's last token is an action (with_last_state keeps it)
    scored = torch.zeros_like(y, dtype=torch.bool)
    for b, it in enumerate(items):
        scored[b, it.n_prompt - 1:len(it.tokens) - 1] = True
    assert torch.equal(y != IGNORE, scored)
    torch.manual_seed(0)
    d = torch.randn(3, x.size(1), 6).requires_grad_()
    discriminator_loss(d, y, torch.tensor([True, False, False]))[0].backward()
    logits = torch.randn(3, x.size(1), 6).requires_grad_()
    loss, _ = policy_loss(logits, torch.randn(2, x.size(1), 6), y, torch.randn(2, x.size(1)), 1,
                          GailConfig(mle_weight=1.0, kl_coef=0.5, entropy_coef=0.1))
    loss.backward()
    for grad in (d.grad, logits.grad):
        assert grad[~scored].abs().sum() == 0 and (grad[scored].abs().sum(-1) > 0).all()
    assert reward_from_logits(d, y)[~scored].abs().sum() == 0


# ----------------------------------------------------------------------------------------------
# Tiny runs: a real citizen of the project

def gail_run(base, out, *args):
    return gail.main([*TINY, "--init_from", str(base), "--out_dir", str(out), *map(str, args)])


def test_fine_tunes_an_mle_checkpoint_logs_and_sample_reads_it(mle_base, tmp_path, capsys):
    out = tmp_path / "gail"
    assert gail_run(mle_base, out, "--max_iters", 4, "--eval_interval", 2, "--disc_steps", 2) == 0
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [e["iter"] for e in log] == [2, 4]
    assert {"val_nll", "val_kl", "accuracy", "disc_accuracy", "reward_mean", "update_ms", "sample_ms"} <= log[0].keys()
    assert 0 <= log[-1]["disc_accuracy"] <= 1 and 0 <= log[-1]["disc_answer_accuracy"] <= 1
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["algorithm"] == "gail" and ckpt["iter_num"] == 4
    capsys.readouterr()
    assert sample.main(["--out_dir", str(out), "--eval", "--json", "--num_problems", "1", "--num_samples", "2",
                        "--temperature", "0.7,1.0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["accuracy_greedy"] is not None
    assert all(row[k] is None for row in rows for k in sample.IMPLICIT_REWARD_KEYS)  # IQLearn's, not GAIL's


def test_sigterm_saves_and_resume_continues_bit_exactly(mle_base, tmp_path, monkeypatch):
    common = ["--max_iters", 4, "--lr_decay_iters", 4, "--eval_interval", 100, "--dropout", 0.1]
    assert gail_run(mle_base, tmp_path / "straight", *common) == 0
    real, calls = gail.policy_samples, []

    def sample_then_stop(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(gail, "policy_samples", sample_then_stop)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert gail_run(mle_base, tmp_path / "stopped", *common) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.setattr(gail, "policy_samples", real)
    assert torch.load(tmp_path / "stopped" / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert gail.main(["--resume", "--out_dir", str(tmp_path / "stopped")]) == 0
    a, b = (torch.load(tmp_path / name / "ckpt.pt", weights_only=True) for name in ("straight", "stopped"))
    for key in ("model", "discriminator", "reference"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


@pytest.mark.parametrize("args, message", [
    (["--kl_coef", "-1"], "--kl_coef must be a finite number >= 0"),
    (["--mle_weight", "nan"], "--mle_weight must be a finite number >= 0"),
    (["--gamma", "1.5"], "--gamma"),
    (["--disc_steps", "0"], "--disc_steps must be >= 1"),
    (["--disc_n_embd", "31"], "--disc_n_embd (31) must be divisible by --disc_n_head (2)"),
    (["--no_such_flag"], "unrecognized arguments"),
    (["--init_from", "/nonexistent/ckpt.pt"], "--init_from /nonexistent/ckpt.pt is neither"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    try:
        code = gail.main([*TINY, "--out_dir", str(tmp_path / "out"), *args])
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "ckpt.pt").exists()


def test_resuming_a_train_py_checkpoint_is_refused_in_one_line(mle_base, tmp_path, capsys):
    out = tmp_path / "mle"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(mle_base.read_bytes())
    assert gail.main(["--resume", "--out_dir", str(out)]) == 2
    assert "is train.py's checkpoint; resume it with train.py" in capsys.readouterr().err
