"""A tabular toy MDP: why self-generated (online) data helps IQLearn little on language.

The paper (Wulfmeier et al. 2024) explains with a toy example why mixing the model's own samples
into IQLearn hardly helps on language: a language model's state is its whole prefix, so the MDP is
a tree, and a policy that leaves the expert's prefixes can never come back to them; there is nothing
to learn about recovering. Its exact setup was not retrievable, so this file is our own construction
of the same argument, small enough to compute exactly.

The toy: actions are moves {-1, 0, +1} on a line, HORIZON steps from position 0; the goal is to end
at 0. The expert steps toward 0 (stays at 0) with probability P_EXPERT, else takes one of the other
two moves. The same action sequences live in two MDPs:
  concatenation  state = the whole prefix, s' = s + a: a tree (364 states), as for a language model;
  recoverable    state = (t, position): prefixes with the same sum merge (36 states), so a step
                 away from the expert's states can be undone by a step back.
Both share the expert's trajectory distribution. Each learner has a tabular Q (one logit vector per
state) trained with iqlearn.py's own losses on a few expert trajectories: MLE (lam = 0), offline
IQLearn (lam > 0) and online IQLearn (a fraction alpha of the data from the learner itself).

Deviation model: the learner is executed as (1 - epsilon) pi + epsilon uniform. A few expert
trajectories alone leave most states unseen, but a learner that copies them well rarely leaves
them; execution noise (a slip of the hand, or sampling at temperature) makes it leave them
regularly, which is the situation where knowing how to recover matters. The expert is executed
with the same noise, so a perfect imitator matches it exactly. The online term's expectation
E_pi is over this executed policy and is computed exactly, by a forward pass over its occupancy,
at every step; all metrics are exact too, so seeds differ only through their expert data.
"""

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass

import torch

from errors import UserError, run_main
from iqlearn import check_coefficients, iqlearn_loss, iqlearn_online_loss
from runfiles import replacing
from runtime import check_ranges, config_parser, knob

# --- the toy (fixed) ------------------------------------------------------------------------------
MOVES = (-1, 0, 1)   # action a moves the position by MOVES[a] = a - 1
HORIZON = 6          # decisions per episode; an episode ends after the last one
P_EXPERT = 0.9       # probability that the expert steps toward 0
NA = len(MOVES)      # number of actions (V in iqlearn.py's [B, T, V])
DYNAMICS = ("concatenation", "recoverable")


# --- the experiment (command-line flags; these are their defaults) -------------------------------
@dataclass
class Config:
    seeds: int = knob(8, "independent expert datasets; results are mean ± standard error (needs 2)", at_least=2)
    n_expert: int = knob(10, "expert trajectories per seed", at_least=1)
    epsilon: float = knob(0.3, "execution noise: learner and expert run (1-eps) pi + eps uniform", at_least=0,
                          at_most=1)
    lam: float = knob(0.01, "weight of the chi^2 (TD) regulariser")
    alpha: float = knob(0.1, "fraction of online (self-generated) data")
    gamma: float = knob(0.9, "discount; at 1 the online value terms cancel (both are V(s0))")
    stress_lam: float = knob(1.0, "lam of the stress setting (large lam * alpha)")
    stress_alpha: float = knob(0.5, "alpha of the stress setting")
    steps: int = knob(1000, "full-batch Adam steps (converged: 2000 give the same table)", at_least=0)
    lr: float = knob(0.1, "Adam learning rate")


# --- the two MDPs ---------------------------------------------------------------------------------
@dataclass
class MDP:
    name: str
    next_state: torch.Tensor  # [n, NA] state after (s, a); 0 (unused) after the last decision
    depth: torch.Tensor       # [n] time step t of each decision state
    position: torch.Tensor    # [n] sum of the moves so far


def build_mdp(name: str) -> MDP:
    """Enumerate the decision states breadth first. A state is its key: the whole prefix under
    concatenation dynamics (a tree), (t, position) under recoverable ones (prefixes merge)."""
    def key(t: int, prefix: tuple, pos: int):
        return prefix if name == "concatenation" else (t, pos)

    ids, frontier = {key(0, (), 0): 0}, [((), 0)]
    time_and_position, next_state = [(0, 0)], [[0] * NA]
    for t in range(1, HORIZON):
        new_frontier = []
        for prefix, pos in frontier:
            s = ids[key(t - 1, prefix, pos)]
            for a, move in enumerate(MOVES):
                child = (prefix + (a,), pos + move)
                if key(t, *child) not in ids:
                    ids[key(t, *child)] = len(ids)
                    time_and_position.append((t, pos + move))
                    next_state.append([0] * NA)
                    new_frontier.append(child)
                next_state[s][a] = ids[key(t, *child)]
        frontier = new_frontier
    depth, position = torch.tensor(time_and_position).T
    return MDP(name, torch.tensor(next_state), depth, position)


def expert_move(position: torch.Tensor) -> torch.Tensor:
    """Index of the expert's preferred action: the move toward 0 (stay at 0)."""
    return 1 - torch.sign(position)


def expert_probs(position: torch.Tensor) -> torch.Tensor:
    """pi_E(.|s) [..., NA]: P_EXPERT on the move toward 0, the rest split over the other two."""
    probs = torch.full((*position.shape, NA), (1 - P_EXPERT) / (NA - 1), dtype=torch.float64)
    return probs.scatter(-1, expert_move(position).unsqueeze(-1), P_EXPERT)


def sample_expert_actions(n: int, seed: int) -> torch.Tensor:
    """n expert trajectories as action indices [n, HORIZON] (valid in both MDPs)."""
    g = torch.Generator().manual_seed(seed)
    position, actions = torch.zeros(n, dtype=torch.long), []
    for _ in range(HORIZON):
        a = torch.multinomial(expert_probs(position), 1, generator=g).squeeze(1)
        position = position + a - 1
        actions.append(a)
    return torch.stack(actions, 1)


def state_ids(mdp: MDP, actions: torch.Tensor) -> torch.Tensor:
    """The state visited before each action: [..., HORIZON] ids, walking from the start state 0."""
    s, states = torch.zeros(actions.shape[:-1], dtype=torch.long), []
    for t in range(HORIZON):
        states.append(s)
        s = mdp.next_state[s, actions[..., t]]
    return torch.stack(states, -1)


# --- exact occupancies and metrics ----------------------------------------------------------------
def executed(policy: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The policy as run: (1 - epsilon) pi + epsilon uniform."""
    return (1 - epsilon) * policy + epsilon / NA


def occupancy(mdp: MDP, policy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact visit probabilities [..., n] and final-position distribution [..., 2 HORIZON + 1]
    of `policy` [..., n, NA], by the forward pass d_{t+1}(s') = sum_{(s,a) -> s'} d_t(s) pi(a|s).
    Every state belongs to one t, so visits[s] = d_t(s) and sums to one over each step's states."""
    d_t = torch.zeros(policy.shape[:-1], dtype=policy.dtype)
    d_t[..., 0] = 1.0
    visits = torch.zeros_like(d_t)
    for _ in range(HORIZON - 1):
        visits += d_t
        flow = d_t.unsqueeze(-1) * policy
        d_t = torch.zeros_like(d_t).index_add_(-1, mdp.next_state.flatten(), flow.flatten(-2))
    visits += d_t
    final_index = mdp.position.unsqueeze(-1) + torch.tensor(MOVES) + HORIZON  # [n, NA]
    final = torch.zeros(*policy.shape[:-2], 2 * HORIZON + 1, dtype=policy.dtype)
    final.index_add_(-1, final_index.flatten(), (d_t.unsqueeze(-1) * policy).flatten(-2))
    return visits, final


def exact_metrics(mdp: MDP, policy: torch.Tensor, seen: torch.Tensor, epsilon: float) -> dict:
    """Per-seed metrics [S] of `policy` [S, n, NA] executed with noise epsilon:
    p_goal   P(final position = 0), the expert's goal;
    tv       total variation between its final-position distribution and the (executed) expert's;
    recover  P(expert's move) at states outside the seed's expert data (`seen` [S, n]), weighted by
             how often the executed policy visits them: what was learned about getting back."""
    visits, final = occupancy(mdp, executed(policy, epsilon))
    _, final_expert = occupancy(mdp, executed(expert_probs(mdp.position), epsilon))
    off_data = visits * ~seen
    p_move = policy.gather(-1, expert_move(mdp.position).expand(len(policy), -1).unsqueeze(-1))
    return {"p_goal": final[:, HORIZON], "tv": 0.5 * (final - final_expert).abs().sum(-1),
            "recover": (off_data * p_move.squeeze(-1)).sum(-1) / off_data.sum(-1)}


# --- training: a Q table per seed, iqlearn.py's losses --------------------------------------------
def weight_rows(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Same values, gradient of row b scaled by weights[b]. iqlearn.py averages rows uniformly;
    with these weights that average's gradient is the exact occupancy-weighted E_pi[...]."""
    w = weights.view(-1, 1, 1)
    return logits.detach() + w * (logits - logits.detach())


def transition_batch(mdp: MDP, seeds: int) -> tuple[torch.Tensor, ...]:
    """Every transition (s, a) of every seed's table as one row: state ids [s, s'] (offset into the
    stacked table), targets [a, ignore], done [last decision, False]. The loss reads V(s') at the
    second position for the TD term, and done sets V(s') = 0 at the end of the episode."""
    n = len(mdp.depth)
    s, a = torch.arange(n).repeat_interleave(NA), torch.arange(NA).repeat(n)
    offset = (torch.arange(seeds) * n).view(seeds, 1, 1)
    states = (torch.stack([s, mdp.next_state.flatten()], -1) + offset).flatten(0, 1)
    targets = torch.stack([a, torch.full_like(a, -1)], -1).repeat(seeds, 1)
    done = torch.stack([mdp.depth[s] == HORIZON - 1, torch.zeros_like(s, dtype=torch.bool)], -1)
    return states, targets, done.repeat(seeds, 1)


def transition_weights(mdp: MDP, policy_run: torch.Tensor) -> torch.Tensor:
    """d(s) pi(a|s) / HORIZON [S * n * NA] for the executed policy [S, n, NA]: the probability that
    a uniformly chosen step of an episode is (s, a); the rows of each seed sum to one."""
    visits, _ = occupancy(mdp, policy_run)
    return (visits.unsqueeze(-1) * policy_run / HORIZON).flatten()


def train(mdp: MDP, expert_states: torch.Tensor, expert_actions: torch.Tensor, cfg: Config,
          lam: float, alpha: float) -> torch.Tensor:
    """Fit one Q table per seed (stacked, nothing shared) on expert data [S, n_expert, HORIZON]
    and return pi = softmax(Q) [S, n, NA]. alpha = 0: iqlearn_loss (lam = 0 is MLE). alpha > 0:
    iqlearn_online_loss, with the learner's executed policy as the policy data, exactly."""
    S, n = expert_states.shape[0], len(mdp.depth)
    table = torch.zeros(S * n, NA, dtype=torch.float64, requires_grad=True)
    # Expert batch: trajectories [S * n_expert, HORIZON]; the episode ends at the last decision.
    e_states = (expert_states + (torch.arange(S) * n).view(S, 1, 1)).flatten(0, 1)
    e_actions = expert_actions.flatten(0, 1)
    e_done = torch.zeros_like(e_actions, dtype=torch.bool)
    e_done[:, -1] = True
    p_states, p_actions, p_done = transition_batch(mdp, S)

    opt = torch.optim.Adam([table], lr=cfg.lr)
    for _ in range(cfg.steps):
        if alpha > 0:
            with torch.no_grad():  # no gradient through the data, as when sampling from the model
                pi_run = executed(torch.softmax(table.view(S, n, NA), -1), cfg.epsilon)
                weights = transition_weights(mdp, pi_run)
            # x len / S: each seed's policy rows count as much as its expert rows (1/S of a mean).
            p_logits = weight_rows(table[p_states], weights * len(weights) / S)
            loss, _ = iqlearn_online_loss(table[e_states], e_actions, p_logits, p_actions, alpha=alpha,
                                          lam=lam, gamma=cfg.gamma, expert_done=e_done, policy_done=p_done)
        else:
            loss, _ = iqlearn_loss(table[e_states], e_actions, lam=lam, gamma=cfg.gamma, done=e_done)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(table.detach().view(S, n, NA), -1)


# --- the experiment -------------------------------------------------------------------------------
def methods(cfg: Config) -> dict[str, tuple[str, float, float]]:
    """name -> (label, lam, alpha); the last two are the stress setting (large lam * alpha)."""
    def iq(lam: float, alpha: float) -> tuple[str, float, float]:
        if alpha == 0:
            return f"IQLearn offline (lam={lam:g})", lam, 0.0
        return f"IQLearn online (lam={lam:g}, alpha={alpha:g})", lam, alpha

    return {"mle": ("MLE (lam=0)", 0.0, 0.0), "offline": iq(cfg.lam, 0.0),
            "online": iq(cfg.lam, cfg.alpha), "stress_offline": iq(cfg.stress_lam, 0.0),
            "stress_online": iq(cfg.stress_lam, cfg.stress_alpha)}


def mean_se(x: torch.Tensor) -> dict[str, float | None]:
    """Mean ± standard error over seeds (None where undefined, e.g. no off-data states visited)."""
    if x.isnan().any():
        return {"mean": None, "se": None}
    return {"mean": x.mean().item(), "se": (x.std() / math.sqrt(len(x))).item()}


def compare_methods(cfg: Config) -> dict:
    """Every method in both MDPs on the same expert data; metrics as mean ± s.e. over seeds."""
    actions = torch.stack([sample_expert_actions(cfg.n_expert, seed) for seed in range(cfg.seeds)])
    results = {}
    for name in DYNAMICS:
        mdp = build_mdp(name)
        states = state_ids(mdp, actions)
        seen = torch.zeros(cfg.seeds, len(mdp.depth), dtype=torch.bool)
        seen.scatter_(1, states.flatten(1), True)
        policies = {"expert": expert_probs(mdp.position).expand(cfg.seeds, -1, -1)}
        for method, (_, lam, alpha) in methods(cfg).items():
            policies[method] = train(mdp, states, actions, cfg, lam, alpha)
        per_seed = {m: exact_metrics(mdp, pi, seen, cfg.epsilon) for m, pi in policies.items()}
        out = {m: {k: mean_se(v) for k, v in metrics.items()} for m, metrics in per_seed.items()}
        # The main metric is P(goal); gains are paired by seed (same expert data).
        goal = {m: metrics["p_goal"] for m, metrics in per_seed.items()}
        out["online_gain"] = mean_se(goal["online"] - goal["offline"])
        out["stress_online_gain"] = mean_se(goal["stress_online"] - goal["stress_offline"])
        results[name] = out
    return results


# --- reporting ------------------------------------------------------------------------------------
def fmt(m: dict, sign: str = "") -> str:
    return "n/a" if m["mean"] is None else f"{m['mean']:{sign}.3f} ± {m['se']:.3f}"


# A difference counts when it exceeds 2 standard errors and this much P(goal): with exact
# metrics the standard error can be ~0, and a 0.001 difference is not a finding.
SMALLEST_EFFECT = 0.005


def clear(difference: float, se: float) -> int:
    """+1 or -1 for a clear difference, 0 for none."""
    margin = max(2 * se, SMALLEST_EFFECT)
    return 1 if difference > margin else -1 if difference < -margin else 0


def verdict(gain: dict) -> str:
    return {1: "helped", -1: "hurt", 0: "made no clear difference"}[clear(gain["mean"], gain["se"])]


def reading(results: dict, cfg: Config) -> list[str]:
    """Two lines stating what the numbers say, decided from the numbers."""
    ga, gb = results["concatenation"]["online_gain"], results["recoverable"]["online_gain"]
    diff, se = gb["mean"] - ga["mean"], math.hypot(ga["se"], gb["se"])
    which = {1: "recoverable dynamics gained more", -1: "concatenation dynamics gained more",
             0: f"the two dynamics gained alike (within 2 s.e. or {SMALLEST_EFFECT})"}[clear(diff, se)]
    sa, sb = (results[name]["stress_online_gain"] for name in DYNAMICS)
    return [f"Online data (lam={cfg.lam:g}, alpha={cfg.alpha:g}) changed P(goal) by {fmt(ga, '+')} "
            f"with concatenation and {fmt(gb, '+')} with recoverable dynamics: {which} "
            f"(difference {diff:+.3f} ± {se:.3f}).",
            f"With lam={cfg.stress_lam:g}, alpha={cfg.stress_alpha:g} online data {verdict(sa)} "
            f"with concatenation ({fmt(sa, '+')}) and {verdict(sb)} with recoverable dynamics "
            f"({fmt(sb, '+')})."]


def table(results: dict, cfg: Config) -> str:
    labels = {"expert": "expert", **{m: label for m, (label, _, _) in methods(cfg).items()}}
    lines = [f"toy MDP: moves {MOVES}, horizon {HORIZON}, expert moves toward 0 w.p. {P_EXPERT}; "
             f"{cfg.n_expert} expert trajectories, epsilon={cfg.epsilon:g}, gamma={cfg.gamma:g}, "
             f"{cfg.steps} steps, {cfg.seeds} seeds (mean ± s.e.)", "",
             f"{'dynamics':<15}{'method':<38}{'P(goal)':<16}{'TV(final)':<16}"
             "P(expert move | off-data)"]
    for name in DYNAMICS:
        res = results[name]
        for i, method in enumerate(labels):
            if method == "stress_offline":
                lines.append(f"{'':<15}{'  online gain':<38}{fmt(res['online_gain'], '+')}")
            m = res[method]
            lines.append(f"{name if i == 0 else '':<15}{labels[method]:<38}{fmt(m['p_goal']):<16}"
                         f"{fmt(m['tv']):<16}{fmt(m['recover'])}")
        lines.append(f"{'':<15}{'  online gain':<38}{fmt(res['stress_online_gain'], '+')}")
    return "\n".join(lines)


def plot(results: dict, cfg: Config, path: str, plt) -> None:
    labels = ["expert"] + [label.replace(" (", "\n(") for label, _, _ in methods(cfg).values()]
    keys = ["expert", *methods(cfg)]
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, name in enumerate(DYNAMICS):
        goal = [results[name][k]["p_goal"] for k in keys]
        ax.bar([x + 0.4 * i for x in range(len(keys))], [g["mean"] for g in goal], width=0.4,
               yerr=[g["se"] for g in goal], capsize=3, label=name)
    ax.set_xticks([x + 0.2 for x in range(len(keys))], labels, fontsize=7)
    ax.set_ylabel("P(goal), executed with noise")
    ax.legend()
    fig.tight_layout()
    with replacing(path) as f:  # runfiles' one way of writing a file: whole or not at all, one line if not
        fig.savefig(f, format=figure_format(path))


# --- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    p = config_parser(Config, "toy_mdp.py", __doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", default=False, help="print the results as one JSON object")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="draw P(goal) per method (needs matplotlib)")
    args = p.parse_args(argv)
    cfg = Config(**{k: v for k, v in vars(args).items() if k not in ("json", "plot")})
    try:
        check_ranges(cfg)   # the knobs' at_least / at_most, and finite floats
    except UserError as e:
        p.error(str(e))
    if cfg.lr <= 0:
        p.error(f"--lr must be > 0, got {cfg.lr}")
    # The objective's coefficients: iqlearn's own range check, naming our flag.
    for name, coefficient in (("lam", {"lam": cfg.lam}), ("stress_lam", {"lam": cfg.stress_lam}),
                              ("gamma", {"gamma": cfg.gamma}), ("alpha", {"alpha": cfg.alpha}),
                              ("stress_alpha", {"alpha": cfg.stress_alpha})):
        try:
            check_coefficients(**coefficient)
        except ValueError as e:
            p.error(f"--{name}: {e}")
    return cfg, args


def plot_target(path: str):
    """matplotlib's pyplot, once --plot's file is known to be writable as a figure (its folder exists,
    matplotlib is installed and draws its format), so a bad --plot fails before the computation."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"--plot {path}: there is no folder {folder}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if figure_format(path) not in formats:
        raise UserError(f"--plot {path}: matplotlib draws {', '.join(sorted(formats))}, not {figure_format(path)!r}")
    return plt


def figure_format(path: str) -> str:
    return os.path.splitext(path)[1][1:].lower() or "png"


def toy(argv: list[str] | None) -> int:
    cfg, args = parse_args(argv)
    plt = plot_target(args.plot) if args.plot else None
    results = compare_methods(cfg)
    if args.json:
        print(json.dumps({"config": asdict(cfg), **results, "reading": reading(results, cfg)}))
    else:
        print(table(results, cfg), "", *reading(results, cfg), sep="\n")
    if plt is not None:
        plot(results, cfg, args.plot, plt)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("toy_mdp.py", lambda: toy(argv))


if __name__ == "__main__":
    torch.set_num_threads(1)  # the tensors are tiny: more threads only add overhead
    sys.exit(main())
