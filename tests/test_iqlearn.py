"""The loss against cross-entropy and against a slow per-position reference."""

import pytest
import torch
import torch.nn.functional as F

from iqlearn import implicit_rewards, iqlearn_loss, policy_entropy, soft_value

B, T, V = 3, 7, 11


def random_batch(seed=0, dtype=torch.float64):
    """Logits plus targets with a prompt mask, right padding, a terminal and a cut last position."""
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, T, V, generator=g)).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g)
    done = torch.zeros(B, T, dtype=torch.bool)
    targets[0, :2] = -1                  # row 0: a 2-token prompt, an EOS at t=4, then padding
    done[0, 4] = True
    targets[0, 5:] = -1
    targets[1, :1] = -1                  # row 1: a prompt, then actions to the end (a cut window)
    done[2, T - 1] = True                # row 2: all actions, terminal at the very end
    return logits, targets, done


def reference_loss(logits, targets, lam, gamma, done, ignore_index=-1):
    """The definition, one position at a time."""
    nll, td, n_action, n_td = 0.0, 0.0, 0, 0
    for b in range(logits.size(0)):
        for t in range(logits.size(1)):
            a = int(targets[b, t])
            if a == ignore_index:
                continue
            nll = nll - F.log_softmax(logits[b, t], dim=-1)[a]
            n_action += 1
            if done is not None and done[b, t]:
                v_next = 0.0
            elif t + 1 < logits.size(1):
                v_next = torch.logsumexp(logits[b, t + 1], dim=-1)
            else:
                continue  # cut window: V(s_{t+1}) unknown, left out of td
            td = td + (logits[b, t, a] - gamma * v_next) ** 2
            n_td += 1
    return nll / n_action + lam * td / n_td


def grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


def test_lam_zero_is_cross_entropy_in_value_and_gradient():
    logits, targets, done = random_batch(dtype=torch.float32)
    ours, _ = iqlearn_loss(logits, targets, lam=0.0, gamma=0.9, done=done)
    ce = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(ours, ce)
    torch.testing.assert_close(grad_of(ours, logits), grad_of(ce, logits))


def test_lam_zero_is_cross_entropy_even_where_td_overflows():
    # float32 logits of 1e20: r^2 is inf, and 0 * inf would be nan; MLE must not see the TD term
    logits, targets, done = random_batch(seed=13, dtype=torch.float32)
    big = (logits.detach() * 1e19).requires_grad_()
    loss, stats = iqlearn_loss(big, targets, lam=0.0, done=done)
    assert torch.isinf(stats["td"])
    ce = F.cross_entropy(big.view(-1, V), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(loss, ce)
    assert torch.isfinite(grad_of(loss, big)).all()


@pytest.mark.parametrize("lam,gamma", [(0.5, 1.0), (2.0, 0.9), (0.1, 0.0)])
@pytest.mark.parametrize("with_done", [True, False])
def test_matches_per_position_reference(lam, gamma, with_done):
    logits, targets, done = random_batch(seed=1)
    done = done if with_done else None
    ours, _ = iqlearn_loss(logits, targets, lam=lam, gamma=gamma, done=done)
    ref = reference_loss(logits, targets, lam, gamma, done)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_of(ours, logits), grad_of(ref, logits))


def test_gradient_matches_autograd_gradcheck():
    logits, targets, done = random_batch(seed=2)
    f = lambda x: iqlearn_loss(x, targets, lam=0.7, gamma=0.95, done=done)[0]
    assert torch.autograd.gradcheck(f, (logits,))


def test_value_shift_changes_td_not_nll():
    logits, targets, done = random_batch(seed=3)
    logits = logits.detach()
    shifted = logits.clone()
    shifted[1, 3] += 5.0  # same policy at that state, different soft value
    _, before = iqlearn_loss(logits, targets, lam=1.0, done=done)
    _, after = iqlearn_loss(shifted, targets, lam=1.0, done=done)
    torch.testing.assert_close(before["nll"], after["nll"])
    assert abs(float(before["td"] - after["td"])) > 1e-3


def test_td_gradient_reaches_next_position():
    # Only position 0 is an action; its TD target V(s_1) lives in position 1's logits, which the
    # nll term never touches.
    logits = torch.randn(1, 2, V, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[4, -1]])
    mle, _ = iqlearn_loss(logits, targets, lam=0.0)
    iq, _ = iqlearn_loss(logits, targets, lam=1.0)
    assert grad_of(mle, logits)[0, 1].abs().max() == 0
    assert grad_of(iq, logits)[0, 1].abs().max() > 1e-6


def test_terminal_uses_zero_next_value():
    logits = torch.randn(1, 2, V, dtype=torch.float64)
    targets = torch.tensor([[4, -1]])
    done = torch.tensor([[True, False]])
    r = implicit_rewards(logits, targets, gamma=0.9, done=done)
    torch.testing.assert_close(r, torch.tensor([[float(logits[0, 0, 4]), 0.0]], dtype=torch.float64))


def td_positions():
    """Which positions of random_batch enter the TD term, from how the batch was built: every
    action except row 1's last one (a cut window: its next state was not computed)."""
    targets = random_batch()[1]
    is_td = targets != -1
    is_td[1, T - 1] = False
    return is_td


def reference_rewards(logits, targets, gamma, done):
    """r_t = Q(s_t, a_t) - gamma V(s_{t+1}) one position at a time, 0 where t is not a TD position."""
    logits = logits.detach()
    r = torch.zeros(targets.shape, dtype=logits.dtype)
    for b, t in td_positions().nonzero().tolist():
        v_next = 0.0 if done[b, t] else torch.logsumexp(logits[b, t + 1], -1)
        r[b, t] = logits[b, t, targets[b, t]] - gamma * v_next
    return r


def test_implicit_rewards_match_definition_and_td():
    logits, targets, done = random_batch(seed=4)
    r = implicit_rewards(logits, targets, gamma=0.8, done=done)
    expected = reference_rewards(logits, targets, 0.8, done)
    torch.testing.assert_close(r, expected)
    assert r[0, :2].eq(0).all() and r[0, 5:].eq(0).all()   # prompt and padding
    assert r[1, T - 1] == 0                                  # cut window, no next state
    # row 0's EOS at t=4 and row 2's at the end: V(s_{t+1}) = 0, so r = Q(s_t, a_t)
    assert r[0, 4] == logits[0, 4, targets[0, 4]] and r[2, T - 1] == logits[2, T - 1, targets[2, T - 1]]
    _, stats = iqlearn_loss(logits, targets, lam=1.0, gamma=0.8, done=done)
    is_td = td_positions()
    torch.testing.assert_close(stats["td"], expected[is_td].square().mean())
    torch.testing.assert_close(stats["reward_mean"], expected[is_td].mean())


def test_implicit_rewards_without_done_treat_every_next_state_as_computed():
    # done=None: no terminals, so row 0's EOS position uses V of the (padding) position after it
    logits, targets, _ = random_batch(seed=12)
    r = implicit_rewards(logits, targets, gamma=0.5)
    v = torch.logsumexp(logits.detach(), -1)
    torch.testing.assert_close(r[0, 4], logits[0, 4, targets[0, 4]].detach() - 0.5 * v[0, 5])
    assert r[2, T - 1] == 0  # the last position has no next logits


def test_stats_value_mean_is_mean_soft_value_over_actions():
    logits, targets, done = random_batch(seed=5)
    _, stats = iqlearn_loss(logits, targets, lam=1.0, done=done)
    v = torch.logsumexp(logits.detach(), -1)
    torch.testing.assert_close(stats["value_mean"], v[targets != -1].mean())
    assert all(not s.requires_grad for s in stats.values())


def test_bf16_logits_match_float32():
    logits, targets, done = random_batch(seed=6, dtype=torch.float32)
    low = logits.detach().bfloat16()
    loss_low, _ = iqlearn_loss(low, targets, lam=0.5, done=done)
    loss_ref, _ = iqlearn_loss(low.float(), targets, lam=0.5, done=done)
    assert loss_low.dtype == torch.float32
    torch.testing.assert_close(loss_low, loss_ref)
    g_low = grad_of(iqlearn_loss(low.requires_grad_(), targets, lam=0.5, done=done)[0], low)
    assert g_low.dtype == torch.bfloat16
    # the same gradient as float32 autograd of the per-position definition, up to bf16 rounding
    high = low.detach().double().requires_grad_()
    g_ref = grad_of(reference_loss(high, targets, 0.5, 1.0, done), high)
    assert g_ref.abs().max() > 1e-2
    torch.testing.assert_close(g_low.double(), g_ref, atol=2e-3, rtol=1e-2)


def test_huge_logits_stay_finite():
    logits, targets, done = random_batch(seed=7, dtype=torch.float32)
    big = (logits.detach().sign() * 1e4).requires_grad_()
    loss, stats = iqlearn_loss(big, targets, lam=0.5, done=done)
    assert torch.isfinite(loss) and all(torch.isfinite(s) for s in stats.values())
    assert torch.isfinite(grad_of(loss, big)).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"lam": -0.1}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"lam": float("inf")}, "lam"),
    ({"gamma": 1.5}, "gamma"),
    ({"gamma": -0.1}, "gamma"),
    ({"gamma": float("nan")}, "gamma"),
])
def test_bad_arguments_raise(kwargs, match):
    logits, targets, _ = random_batch()
    with pytest.raises(ValueError, match=match):
        iqlearn_loss(logits, targets, **kwargs)


def test_shape_mismatch_raises():
    logits, targets, done = random_batch()
    with pytest.raises(ValueError, match="targets"):
        iqlearn_loss(logits, targets[:, :-1])
    with pytest.raises(ValueError, match="done"):
        iqlearn_loss(logits, targets, done=done[:, :-1])
    with pytest.raises(ValueError, match="done"):
        implicit_rewards(logits, targets, done=done.long())


# --- online IQLearn -------------------------------------------------------------------------------

from iqlearn import iqlearn_online_loss  # noqa: E402


def test_online_loss_at_alpha_zero_is_the_offline_loss():
    logits, targets, done = random_batch(seed=8)
    policy, policy_targets, policy_done = random_batch(seed=9)
    online, _ = iqlearn_online_loss(logits, targets, policy, policy_targets, alpha=0.0, lam=0.5,
                                    gamma=0.9, expert_done=done, policy_done=policy_done)
    offline, _ = iqlearn_loss(logits, targets, lam=0.5, gamma=0.9, done=done)
    assert online.item() == offline.item()
    g_expert, g_policy = torch.autograd.grad(online, (logits, policy))
    torch.testing.assert_close(g_expert, grad_of(offline, logits), rtol=0, atol=0)
    assert g_policy.abs().max() == 0


def test_online_value_term_raises_expert_values_and_lowers_policy_values():
    # One-step episodes (s0 -> a -> terminal) with lam = 0 and no MLE signal at the policy state:
    # the value term alone moves V(s0), up where the expert went, down where the policy went.
    expert = torch.zeros(1, 1, V, dtype=torch.float64, requires_grad=True)
    policy = torch.zeros(1, 1, V, dtype=torch.float64, requires_grad=True)
    done = torch.ones(1, 1, dtype=torch.bool)
    loss, stats = iqlearn_online_loss(expert, torch.tensor([[1]]), policy, torch.tensor([[2]]),
                                      alpha=0.5, lam=0.0, expert_done=done, policy_done=done)
    g_expert, g_policy = torch.autograd.grad(loss, (expert, policy))
    # dV/dlogits = softmax, so the value part of the gradient is +-alpha * softmax
    uniform = torch.full((V,), 1.0 / V, dtype=torch.float64)
    torch.testing.assert_close(-g_policy[0, 0], -0.5 * uniform)       # descent lowers V(policy)
    ce_grad = uniform - torch.nn.functional.one_hot(torch.tensor(1), V)
    torch.testing.assert_close(g_expert[0, 0], ce_grad - 0.5 * uniform)  # descent raises V(expert)


def test_online_loss_matches_its_formula():
    e, et, ed = random_batch(seed=10)
    p, pt, pd = random_batch(seed=11)
    alpha, lam, gamma = 0.3, 0.7, 0.9
    loss, _ = iqlearn_online_loss(e, et, p, pt, alpha, lam, gamma, ed, pd)
    r_e = implicit_rewards(e, et, gamma, ed)
    r_p = implicit_rewards(p, pt, gamma, pd)

    is_td = td_positions()  # both batches come from random_batch: the same layout

    def value_diff(logits, targets, done):  # V(s) - gamma V(s') at TD positions = V - Q + r
        v = torch.logsumexp(logits.detach(), -1)
        q = logits.detach().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        r = reference_rewards(logits, targets, gamma, done)
        return (v - q + r)[is_td].mean()

    torch.testing.assert_close(r_e, reference_rewards(e, et, gamma, ed))
    torch.testing.assert_close(r_p, reference_rewards(p, pt, gamma, pd))
    nll = torch.nn.functional.cross_entropy(e.detach().view(-1, V), et.view(-1), ignore_index=-1)
    expected = (nll - alpha * (value_diff(e, et, ed) - value_diff(p, pt, pd))
                + lam * ((1 - alpha) * r_e[is_td].square().mean() + alpha * r_p[is_td].square().mean()))
    torch.testing.assert_close(loss.detach(), expected)
    # ... and its gradient is that of the formula written with autograd (value terms included)
    g_e, g_p = torch.autograd.grad(loss, (e, p))

    def v_terms(logits, targets, done):  # V(s) - gamma V(s'), differentiable
        v = torch.logsumexp(logits, -1)
        v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1).masked_fill(done, 0.0)
        return (v - gamma * v_next)[is_td].mean()

    def r_sq(logits, targets, done):
        v = torch.logsumexp(logits, -1)
        v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1).masked_fill(done, 0.0)
        q = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (q - gamma * v_next)[is_td].square().mean()

    ce = torch.nn.functional.cross_entropy(e.view(-1, V), et.view(-1), ignore_index=-1)
    formula = (ce - alpha * (v_terms(e, et, ed) - v_terms(p, pt, pd))
               + lam * ((1 - alpha) * r_sq(e, et, ed) + alpha * r_sq(p, pt, pd)))
    f_e, f_p = torch.autograd.grad(formula, (e, p))
    torch.testing.assert_close(g_e, f_e)
    torch.testing.assert_close(g_p, f_p)


def test_online_alpha_out_of_range_raises():
    e, et, _ = random_batch()
    with pytest.raises(ValueError, match="alpha"):
        iqlearn_online_loss(e, et, e, et, alpha=1.5)


# ----------------------------------------------------------------------------------------------
# Wide logits: exp below float32's underflow bound takes a slow path on CPUs, so the loss clamps
# its exponents (iqlearn.exp_floor). Values and gradients must still be the float64 definition's.

def wide_batch(spread: float, with_inf: bool):
    """float32 logits whose values within a state span about `spread` nats, some -inf if asked."""
    logits, targets, done = random_batch(seed=3, dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    wide = (torch.rand(B, T, V, generator=g) * 2 - 1) * spread
    if with_inf:
        wide[..., ::3] = float("-inf")  # never an action's own logit: targets are remapped below
        targets = torch.where(targets >= 0, (targets // 3) * 3 + 1, targets).clamp(max=V - 1)
    return wide.requires_grad_(), targets, done


@pytest.mark.parametrize("spread", [100.0, 1000.0])
@pytest.mark.parametrize("with_inf", [False, True])
def test_wide_and_infinite_logits_match_float64_definition(spread, with_inf):
    logits, targets, done = wide_batch(spread, with_inf)
    ours, _ = iqlearn_loss(logits, targets, lam=0.5, gamma=0.9, done=done)
    # The independent computation: the per-position definition in float64 with autograd.
    x64 = logits.detach().double().requires_grad_()
    reference = reference_loss(x64, targets, 0.5, 0.9, done)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=1e-4 * spread)
    grad, grad64 = grad_of(ours, logits), grad_of(reference, x64)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-5, atol=1e-6)


def test_soft_value_is_logsumexp_to_the_last_bit_at_ordinary_logits_and_exact_when_wide():
    g = torch.Generator().manual_seed(0)
    ordinary = 5 * torch.randn(64, 300, generator=g)
    assert torch.equal(soft_value(ordinary), torch.logsumexp(ordinary, dim=-1))
    wide = ordinary * 100
    wide[0] = float("-inf")                        # a state with no possible action
    wide[1, 1:] = float("-inf")                    # one possible action: V is its logit
    expected = torch.logsumexp(wide.double(), dim=-1)
    torch.testing.assert_close(soft_value(wide).double(), expected, rtol=1e-7, atol=0)
    assert soft_value(wide)[0] == float("-inf") and soft_value(wide)[1] == wide[1, 0]


def test_loss_at_ordinary_logits_is_torch_logsumexps_to_the_last_bit():
    """Nothing lies below the floor, so the clamp changes nothing: nll is the one torch.logsumexp gives."""
    logits, targets, done = random_batch(dtype=torch.float32)
    ours, stats = iqlearn_loss(logits, targets, lam=0.5, gamma=0.9, done=done)
    is_action = targets != -1
    v = torch.logsumexp(logits, dim=-1)
    q = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(stats["nll"], (torch.where(is_action, v - q, 0.0).sum() / is_action.sum()).detach())
    torch.testing.assert_close(grad_of(ours, logits), grad_of(reference_loss(logits, targets, 0.5, 0.9, done), logits),
                               rtol=1e-5, atol=1e-7)


def test_entropy_of_wide_and_infinite_logits_matches_float64():
    logits, targets, _ = wide_batch(1000.0, with_inf=True)
    ours = policy_entropy(logits, targets)
    x64 = logits.detach().double()
    p = torch.softmax(x64, dim=-1)
    entropy64 = -(torch.special.xlogy(p, p)).sum(-1)[targets != -1].mean()
    torch.testing.assert_close(ours.double(), entropy64, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(grad_of(ours, logits)).all()
