"""Offline IQLearn for language models, as temporal-difference regularised maximum likelihood.

Read a language model as an agent (Wulfmeier et al. 2024, "Imitating Language via Scalable Inverse
Reinforcement Learning"): the state s_t is the prefix, the action a_t the next token, the dynamics
concatenate (s_{t+1} = s_t + a_t), and the state after end-of-text is terminal with value 0. Its
logits are a soft Q-function, Q(s_t, .) = logits[t], which fixes everything else:

    V(s)       = logsumexp_a Q(s, a)                          soft value (temperature 1)
    log pi(a|s) = Q(s, a) - V(s)                              the policy is softmax(Q)
    r_t        = Q(s_t, a_t) - gamma * V(s_{t+1})              implicit reward (V = 0 after EOS)

IQLearn (Garg et al. 2021) with the chi^2 regulariser picks Q by maximising, over expert data E
(E_E: the expert's normalised discounted occupancy, weights proportional to gamma^t),

    E_E[Q(s,a) - gamma V(s')] - (1 - gamma) E_rho0[V(s0)] - lam * E_E[r^2].

Offline, the initial-state term telescopes along each expert trajectory s0, s1, ..., sT:
sum_t gamma^t (V(s_t) - gamma V(s_{t+1})) = V(s0), since each V(s_t) with t > 0 appears once with
+gamma^t and once with -gamma^t, and V = 0 after the end. Normalised like the occupancy, that is
(1 - gamma) E_rho0[V(s0)] = E_E[V(s) - gamma V(s')]. Substituting, the gamma V(s') terms cancel
transition by transition:

    J = E_E[Q(s,a) - V(s)] - lam * E_E[r^2] = E_E[log pi(a|s)] - lam * E_E[(Q(s,a) - gamma V(s'))^2]

so the loss to minimise is  nll + lam * td.  This form no longer depends on how transitions are
weighted; the code averages tokens uniformly, as cross-entropy does (a choice: the substitution
above is exact under the gamma^t weights). lam = 0 is plain cross-entropy (MLE); lam > 0 adds a
penalty that ties each state's value to the next one's, which MLE leaves free (shifting all of a
state's logits by a constant changes no probability, but it does change r).

The paper writes the same objective over a policy and a value, J(pi, v) = E[log pi(a|s)]
- lam * E[(v(s) + log pi(a|s) - gamma v(s'))^2]: with Q(s, a) = v(s) + log pi(a|s), V(s) = v(s)
and this is the loss above, term for term. Nothing here needs v to come from the logits' scale;
a model with a value head (model.py) supplies it separately, and this file does not change.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


def exp_floor(dtype: torch.dtype) -> float:
    """The smallest whole z whose exp(z) is a normal number of this float dtype (-87 for float32).

    exp(z) below it is subnormal (under 1.2e-38 in float32), and this CPU's vectorised exp takes a
    slow path for such results: 15x slower at z = -90 than at z = -80. Logits whose spread within a
    state exceeds 87 nats (a long or overfitting run, a large vocabulary, a pretrained model) put
    most of a [B, T, V] tensor there. Clamping z at the floor first changes exp(z) by less than
    2e-38, which no sum that includes the state's largest term exp(0) = 1 can see; at ordinary
    logits it changes nothing."""
    return float(math.ceil(math.log(torch.finfo(dtype).tiny)))


def soft_value(logits: torch.Tensor) -> torch.Tensor:
    """V(s) = logsumexp over the last dimension, float32 or wider: max + log sum exp(logits - max),
    the same operations as torch.logsumexp (equal to the last bit at ordinary logits) with the
    exponents clamped at exp_floor. A row whose logits are all -inf has V = -inf."""
    top = logits.amax(dim=-1, keepdim=True)
    shift = top.masked_fill(top.isinf(), 0.0)  # as torch.logsumexp: no inf - inf
    total = (logits - shift).clamp_(min=exp_floor(logits.dtype)).exp_().sum(dim=-1)
    v = total.log_().add_(shift.squeeze(-1))
    return v.masked_fill_(top.squeeze(-1) == -math.inf, -math.inf)


class _SoftValueAndQ(torch.autograd.Function):
    """V(s_t) = logsumexp(logits[t]) and Q(s_t, a_t) = logits[t, a_t], in float32, in one pass.

    Autograd would keep a float32 copy of the logits and a softmax for logsumexp's backward: a
    second and third [B, T, V] tensor. The loss depends on position t's logits only through these
    two scalars, so its gradient there is
        dL/dlogits[t] = dL/dV_t * softmax(logits[t]) + dL/dQ_t * onehot(a_t),
    which backward builds in a single [B, T, V] buffer, as cross-entropy's own backward does. Both
    directions clamp their exponents (exp_floor), so wide logits cost what narrow ones do.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, actions: torch.Tensor):
        # At least float32: a no-op for float32 (or float64) logits; bf16/fp16 are upcast once.
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        v = soft_value(x)
        q = x.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, actions, v)
        return v, q

    @staticmethod
    def backward(ctx, grad_v: torch.Tensor, grad_q: torch.Tensor):
        logits, actions, v = ctx.saved_tensors
        grad = torch.sub(logits, v.unsqueeze(-1))  # v's dtype by type promotion, one allocation
        grad.clamp_(min=exp_floor(grad.dtype)).exp_().mul_(grad_v.unsqueeze(-1))  # softmax(logits) * dL/dV
        grad.scatter_add_(-1, actions.unsqueeze(-1), grad_q.unsqueeze(-1))  # + onehot(a_t) * dL/dQ
        return grad.to(logits.dtype), None


def check_coefficients(lam: float = 0.0, gamma: float = 1.0, alpha: float = 0.0) -> None:
    """ValueError unless lam is a finite number >= 0 and gamma and alpha lie in [0, 1]: the one
    range check of the objective's coefficients (the losses, train.py and toy_mdp.py use it)."""
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def _check(logits: torch.Tensor, targets: torch.Tensor, gamma: float, done: torch.Tensor | None,
           lam: float = 0.0) -> None:
    check_coefficients(lam=lam, gamma=gamma)
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [B, T, V] and targets [B, T]; got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    if done is not None and (done.shape != targets.shape or done.dtype != torch.bool):
        raise ValueError(f"done must be a bool tensor shaped like targets {tuple(targets.shape)}; "
                         f"got {done.dtype} {tuple(done.shape)}")


class Transitions(NamedTuple):
    """Per-position pieces of the objective, each [B, T] (float32 or wider; bool for the masks)."""
    v: torch.Tensor             # V(s_t) = logsumexp Q(s_t, .)
    q: torch.Tensor             # Q(s_t, a_t)
    gamma_v_next: torch.Tensor  # gamma * V(s_{t+1}): 0 after a terminal action and at the last position
    is_action: torch.Tensor     # a_t is an expert action (the target is not ignore_index)
    is_td: torch.Tensor         # ... whose next state's value is known: it enters the TD term


def transitions(logits: torch.Tensor, targets: torch.Tensor, gamma: float, done: torch.Tensor | None,
                ignore_index: int) -> Transitions:
    """V, Q, gamma V(s_{t+1}) and the masks at every position (see Transitions)."""
    is_action = targets != ignore_index
    v, q = _SoftValueAndQ.apply(logits, targets.masked_fill(~is_action, 0))
    # Q at a non-action position is action 0's logit, a placeholder: zeroed, so that a -inf there
    # (a masked token) cannot turn into inf * 0 = nan in td's gradient.
    q = q.masked_fill(~is_action, 0.0)
    # V(s_{t+1}) is the value at the next position. The last position has no next logits; after a
    # terminal action the next state's value is 0 by definition.
    v_next = F.pad(v[:, 1:], (0, 1))
    has_next = torch.ones_like(is_action)
    has_next[:, -1] = False
    if done is not None:
        v_next = v_next.masked_fill(done, 0.0)
        has_next = has_next | done
    # A cut window's last action (not terminal, next logits not computed) counts in nll, not in td.
    return Transitions(v, q, gamma * v_next, is_action, is_action & has_next)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of x over the positions where mask is True (0 where there are none)."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def policy_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean entropy of pi(.|s_t) = softmax(Q(s_t, .)) over action positions: the paper's
    'MLE with entropy cost' diversity baseline subtracts a multiple of it from the loss."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp = logp.clamp(min=exp_floor(logp.dtype))  # p log p of a p below 2e-38 is 0 either way (exp_floor)
    entropy = -(logp.exp() * logp).sum(-1)
    return entropy[targets != ignore_index].mean()


def iqlearn_loss(logits: torch.Tensor, targets: torch.Tensor, lam: float = 0.5, gamma: float = 1.0,
                 done: torch.Tensor | None = None, ignore_index: int = -1
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Offline IQLearn loss  nll + lam * td  (module docstring for the derivation).

    logits  [B, T, V]  Q(s_t, .) at every position, any float dtype (computed in float32)
    targets [B, T]     expert action a_t, or ignore_index where t is not an action (prompt, padding)
    done    [B, T]     True where a_t ends the episode (V(s_{t+1}) = 0); None: no terminals
    Returns the scalar loss and detached statistics: nll, td, the mean implicit reward over the TD
    positions and the mean soft value over the actions (train.py logs them at each evaluation).
    """
    _check(logits, targets, gamma, done, lam)
    v, q, gamma_v_next, is_action, is_td = transitions(logits, targets, gamma, done, ignore_index)

    # MLE term: -log pi(a_t|s_t) = V(s_t) - Q(s_t, a_t), averaged over action positions as
    # cross-entropy averages it (0/0 = nan when there are none, as for F.cross_entropy).
    nll = torch.where(is_action, v - q, 0.0).sum() / is_action.sum()
    # chi^2 regulariser: the implicit reward r_t = Q(s_t, a_t) - gamma V(s_{t+1}), squared.
    r = q - gamma_v_next
    td = masked_mean(r.square(), is_td)
    loss = nll + lam * td if lam > 0 else nll

    stats = {"nll": nll.detach(), "td": td.detach(),
             "reward_mean": masked_mean(r, is_td).detach(),
             "value_mean": masked_mean(v, is_action).detach()}
    return loss, stats


@torch.no_grad()
def implicit_rewards(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 1.0,
                     done: torch.Tensor | None = None, ignore_index: int = -1) -> torch.Tensor:
    """r_t = Q(s_t, a_t) - gamma V(s_{t+1}) at TD positions, 0 elsewhere: [B, T], float32 or wider.
    A sequence's extracted return is the sum over its positions."""
    _check(logits, targets, gamma, done)
    t = transitions(logits, targets, gamma, done, ignore_index)
    return torch.where(t.is_td, t.q - t.gamma_v_next, 0.0)


def iqlearn_online_loss(expert_logits: torch.Tensor, expert_targets: torch.Tensor,
                        policy_logits: torch.Tensor, policy_targets: torch.Tensor, alpha: float,
                        lam: float = 0.5, gamma: float = 1.0,
                        expert_done: torch.Tensor | None = None,
                        policy_done: torch.Tensor | None = None, ignore_index: int = -1
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Online IQLearn: a fraction alpha of the data comes from the policy itself (pi).

    With the mixture mu = (1 - alpha) mu_E + alpha mu_pi in place of E for the initial-state and
    regulariser terms, the telescoping above no longer cancels the policy's part, and

        J_on = E_E[log pi] + alpha (E_E[V(s) - gamma V(s')] - E_pi[V(s) - gamma V(s')])
               - lam ((1 - alpha) E_E[r^2] + alpha E_pi[r^2]).

    The value term raises V on expert transitions and lowers it on the policy's own. The policy
    batch (its logits, the sampled tokens as targets, EOS as done) is sampled without gradient; at
    alpha = 0 this is exactly iqlearn_loss. Returns -J_on and detached statistics.
    """
    check_coefficients(alpha=alpha)
    _check(expert_logits, expert_targets, gamma, expert_done, lam)
    _check(policy_logits, policy_targets, gamma, policy_done)
    v_e, q_e, gv_e, act_e, td_e = transitions(expert_logits, expert_targets, gamma, expert_done,
                                              ignore_index)
    v_p, q_p, gv_p, _, td_p = transitions(policy_logits, policy_targets, gamma, policy_done,
                                          ignore_index)

    nll = torch.where(act_e, v_e - q_e, 0.0).sum() / act_e.sum()            # -E_E[log pi]
    value_gap = masked_mean(v_e - gv_e, td_e) - masked_mean(v_p - gv_p, td_p)
    td_expert = masked_mean((q_e - gv_e).square(), td_e)                    # E_E[r^2]
    td_policy = masked_mean((q_p - gv_p).square(), td_p)                    # E_pi[r^2]
    loss = nll - alpha * value_gap + lam * ((1 - alpha) * td_expert + alpha * td_policy)

    return loss, {"nll": nll.detach(), "td": td_expert.detach()}
