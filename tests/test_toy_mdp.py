"""The toy MDP: its two dynamics, exact occupancies and policy data, and the experiment's CLI."""

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

import toy_mdp
from iqlearn import iqlearn_online_loss
from toy_mdp import HORIZON, NA, Config, build_mdp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--seeds", "4", "--steps", "200", "--lr", "0.2"]  # converged enough for the finding


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """As `python toy_mdp.py` runs: the tensors are tiny, and extra threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_policy(n, seed=0, seeds=1):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(seeds, n, NA, generator=g, dtype=torch.float64), -1)


def test_concatenation_is_a_tree():
    mdp = build_mdp("concatenation")
    children = mdp.next_state[mdp.depth < HORIZON - 1].flatten()
    # Every state but the start is reached from exactly one (state, action): by one prefix only.
    assert sorted(children.tolist()) == list(range(1, len(mdp.depth)))
    assert len(mdp.depth) == sum(NA ** t for t in range(HORIZON))


def test_recoverable_lets_a_deviation_return_to_an_expert_state():
    tree, line = build_mdp("concatenation"), build_mdp("recoverable")
    stay, slip_and_back = [1] * HORIZON, [2, 0] + [1] * (HORIZON - 2)  # the expert stays at 0
    actions = torch.tensor([stay, slip_and_back])
    for t in range(2, HORIZON):
        assert toy_mdp.state_ids(line, actions)[0, t] == toy_mdp.state_ids(line, actions)[1, t]
        assert toy_mdp.state_ids(tree, actions)[0, t] != toy_mdp.state_ids(tree, actions)[1, t]


@pytest.mark.parametrize("name", toy_mdp.DYNAMICS)
def test_occupancies_sum_to_one_per_step(name):
    mdp = build_mdp(name)
    visits, final = toy_mdp.occupancy(mdp, random_policy(len(mdp.depth), seeds=2))
    for t in range(HORIZON):
        per_step = visits[:, mdp.depth == t].sum(-1)
        torch.testing.assert_close(per_step, torch.ones(2, dtype=per_step.dtype))
    torch.testing.assert_close(final.sum(-1), torch.ones(2, dtype=final.dtype))


@pytest.mark.parametrize("name", toy_mdp.DYNAMICS)
def test_transition_rows_give_the_exact_expectation_over_trajectories(name):
    """The online term on the weighted transition rows equals it on all NA^HORIZON trajectories,
    each weighted by its probability under the executed policy (value and gradient both)."""
    mdp = build_mdp(name)
    g = torch.Generator().manual_seed(1)
    table = torch.randn(len(mdp.depth), NA, generator=g, dtype=torch.float64, requires_grad=True)
    pi_run = toy_mdp.executed(torch.softmax(table.detach(), -1), 0.3).unsqueeze(0)
    expert = toy_mdp.sample_expert_actions(5, seed=0)
    e_states, e_done = toy_mdp.state_ids(mdp, expert), torch.zeros(5, HORIZON, dtype=torch.bool)
    e_done[:, -1] = True

    def online_term(states, targets, done, weights):
        logits = toy_mdp.weight_rows(table[states], weights * len(weights))
        loss, _ = iqlearn_online_loss(table[e_states], expert, logits, targets, alpha=0.5,
                                      lam=0.3, gamma=0.9, expert_done=e_done, policy_done=done)
        return torch.autograd.grad(loss, table)[0]

    rows = toy_mdp.transition_batch(mdp, 1)
    by_rows = online_term(*rows, toy_mdp.transition_weights(mdp, pi_run))
    actions = torch.tensor(list(itertools.product(range(NA), repeat=HORIZON)))
    states = toy_mdp.state_ids(mdp, actions)
    prob = pi_run[0, states, actions].prod(-1)
    done = torch.zeros_like(actions, dtype=torch.bool)
    done[:, -1] = True
    by_trajectories = online_term(states, actions, done, prob)
    torch.testing.assert_close(by_rows, by_trajectories)


def test_with_unlimited_data_and_no_noise_every_method_recovers_the_expert():
    cfg = Config(seeds=1, n_expert=2000, epsilon=0.0, steps=200, lr=0.2)
    actions = toy_mdp.sample_expert_actions(cfg.n_expert, seed=0).unsqueeze(0)
    for name in toy_mdp.DYNAMICS:
        mdp = build_mdp(name)
        states = toy_mdp.state_ids(mdp, actions)
        seen = torch.zeros(1, len(mdp.depth), dtype=torch.bool).scatter_(1, states.flatten(1), True)
        expert = toy_mdp.exact_metrics(mdp, toy_mdp.expert_probs(mdp.position)[None], seen, 0.0)
        for method in ("mle", "offline", "online"):
            _, lam, alpha = toy_mdp.methods(cfg)[method]
            pi = toy_mdp.train(mdp, states, actions, cfg, lam, alpha)
            learner = toy_mdp.exact_metrics(mdp, pi, seen, 0.0)
            assert abs(learner["p_goal"] - expert["p_goal"]).item() < 0.02, (name, method)
            assert learner["tv"].item() < 0.03, (name, method)


@pytest.fixture(scope="module")
def fast_json():
    """Two runs of the CLI in this process, reduced so that it takes seconds."""
    outputs = []
    for _ in range(2):
        with contextlib.redirect_stdout(io.StringIO()) as buffer:
            toy_mdp.main(["--json", *FAST])
        outputs.append(buffer.getvalue())
    return outputs


def test_run_is_deterministic(fast_json):
    assert fast_json[0] == fast_json[1]


def test_json_has_the_documented_keys(fast_json):
    out = json.loads(fast_json[0])
    for name in ("concatenation", "recoverable"):
        assert {"expert", "mle", "offline", "online", "online_gain"} <= set(out[name])
        assert set(out[name]["online"]) == {"p_goal", "tv", "recover"}
        assert set(out[name]["online_gain"]) == {"mean", "se"}
    assert len(out["reading"]) == 2


def test_online_data_helps_where_states_merge_and_not_on_the_tree(fast_json):
    out = json.loads(fast_json[0])
    tree, line = out["concatenation"]["online_gain"], out["recoverable"]["online_gain"]
    assert abs(tree["mean"]) < 0.01
    assert line["mean"] - 2 * line["se"] > 0.02
    # The failing setting fails: with large lam * alpha online data hurts in both.
    for name in ("concatenation", "recoverable"):
        gain = out[name]["stress_online_gain"]
        assert gain["mean"] + 2 * gain["se"] < 0
    assert "recoverable dynamics gained more" in out["reading"][0]


@pytest.mark.parametrize("flag", ["--alpha=1.5", "--seeds=-1", "--n_expert=0", "--lam=nan",
                                  "--epsilon=-0.1", "--steps=abc", "--no_such_flag"])
def test_bad_flag_is_one_line_and_exit_2(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        toy_mdp.main([flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_bad_flag_from_the_command_line_has_no_traceback():
    proc = subprocess.run([sys.executable, "toy_mdp.py", "--alpha", "2"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "alpha" in proc.stderr and proc.stdout == ""


def test_reading_needs_a_clear_difference():
    assert toy_mdp.clear(0.001, 0.0) == 0          # exact but negligible
    assert toy_mdp.clear(0.05, 0.03) == 0          # within 2 s.e.
    assert toy_mdp.clear(0.05, 0.01) == 1 and toy_mdp.clear(-0.05, 0.01) == -1
    assert toy_mdp.verdict({"mean": -0.1, "se": 0.01}) == "hurt"


# --- the metrics against brute force over all 3^6 action sequences --------------------------------

def brute_force_metrics(mdp, policy, seen, epsilon):
    """p_goal, tv and recover of one policy [n, NA] by enumerating every action sequence: its
    probability under the executed policy, the states it visits, where it ends."""
    actions = torch.tensor(list(itertools.product(range(NA), repeat=HORIZON)))
    states = toy_mdp.state_ids(mdp, actions)
    moves = actions - 1                                         # MOVES = (-1, 0, +1)
    before = torch.cumsum(moves, 1) - moves                     # position before each decision
    toward_zero = torch.where(before > 0, 0, torch.where(before < 0, 2, 1))
    expert = torch.where(actions == toward_zero, 0.9, 0.05)     # pi_E of each taken action
    run = (1 - epsilon) * policy + epsilon / NA
    prob = run[states, actions].prod(-1)
    prob_expert = ((1 - epsilon) * expert + epsilon / NA).prod(-1)
    final = moves.sum(1)
    visits = torch.zeros(len(mdp.depth), dtype=torch.float64).index_add_(0, states.flatten(), prob.repeat_interleave(HORIZON))
    p_expert_move = torch.zeros(len(mdp.depth), dtype=torch.float64)
    p_expert_move[states.flatten()] = policy[states.flatten(), toward_zero.flatten()]
    off = visits * ~seen
    tv = 0.5 * sum(abs(prob[final == f].sum() - prob_expert[final == f].sum()) for f in range(-HORIZON, HORIZON + 1))
    return prob[final == 0].sum(), tv, (off * p_expert_move).sum() / off.sum()


@pytest.mark.parametrize("name", toy_mdp.DYNAMICS)
def test_evaluate_matches_brute_force_over_action_sequences(name):
    mdp = build_mdp(name)
    n = len(mdp.depth)
    policy = random_policy(n, seed=5)[0]
    seen = torch.rand(n, generator=torch.Generator().manual_seed(6)) < 0.3
    m = toy_mdp.exact_metrics(mdp, policy[None], seen[None], 0.2)
    p_goal, tv, recover = brute_force_metrics(mdp, policy, seen, 0.2)
    torch.testing.assert_close(m["p_goal"][0], p_goal)
    torch.testing.assert_close(m["tv"][0], tv)
    torch.testing.assert_close(m["recover"][0], recover)


def test_recover_is_the_expert_move_probability_for_known_policies():
    mdp = build_mdp("recoverable")
    seen = torch.zeros(1, len(mdp.depth), dtype=torch.bool)
    seen[0, :3] = True
    expert = toy_mdp.expert_probs(mdp.position)[None]
    uniform = torch.full_like(expert, 1 / NA)
    assert toy_mdp.exact_metrics(mdp, expert, seen, 0.3)["recover"].item() == pytest.approx(0.9)
    assert toy_mdp.exact_metrics(mdp, uniform, seen, 0.3)["recover"].item() == pytest.approx(1 / 3)
    m = toy_mdp.exact_metrics(mdp, expert, seen, 0.3)
    assert m["tv"].item() == pytest.approx(0, abs=1e-12) and 0.6 < m["p_goal"].item() < 0.8


def test_mean_se_over_seeds():
    m = toy_mdp.mean_se(torch.tensor([1.0, 2.0, 4.0]))
    assert m["mean"] == pytest.approx(7 / 3)
    sample_var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2   # n - 1 in the denominator
    assert m["se"] == pytest.approx((sample_var / 3) ** 0.5)
    assert toy_mdp.mean_se(torch.tensor([1.0, float("nan")])) == {"mean": None, "se": None}
