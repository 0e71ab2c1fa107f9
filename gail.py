"""GAIL for a language model: the adversarial baseline the paper compares IQLearn with.

    python gail.py --init_from out_mle/ckpt.pt --out_dir out_gail     # fine-tune an MLE model
    python gail.py --init_from out_mle/ckpt.pt --mle_weight 0 ...     # the ablation without the MLE loss
    python sample.py --out_dir out_gail --eval                         # evaluated like any other run

Generative adversarial imitation learning (Ho & Ermon 2016) in iqlearn.py's MDP: the state s_t is
the prefix, the action a_t the next token, end-of-text is terminal. Two networks play a game.

The discriminator D(s, a) in (0, 1), the probability that action a in state s is the expert's, is a
second GPT of the policy's architecture with its own weights (--disc_n_layer, --disc_n_head,
--disc_n_embd set its size). Its output at position t is a logit d(s_t, a) for every next token a,
D = sigmoid(d), so one forward pass scores every action of a sequence, as the policy's logits are
Q(s_t, .) in iqlearn.py. It starts fresh: one initialised from the MLE model would call every likely
token the expert's. It learns by binary cross-entropy, expert actions (label 1) against the actions
the policy sampled for the same prompts (label 0):

    L_D = E_E[-log D(s,a)] + E_pi[-log(1 - D(s,a))] = E_E[softplus(-d)] + E_pi[softplus(d)]

The policy (the language model) learns by policy gradient on its own samples with the reward

    r_t = log D(s_t, a_t) - log(1 - D(s_t, a_t)) = d(s_t, a_t)        the discriminator's logit

(reward_from_logits says why this form). The paper needed three stabilisers for GAIL to train at all,
and they are here, each with its flag: an MLE loss on the expert data (--mle_weight, default 1), a KL
penalty towards the frozen initial policy pi_ref (--kl_coef) and an entropy cost (--entropy_coef).
The policy's loss is

    L_pi = pg + mle_weight * nll_E + kl_coef * KL(pi || pi_ref) - entropy_coef * H(pi)

Each iteration: sample the policy's continuations of the batch's prompts (data.policy_samples,
as online IQLearn does), take --disc_steps discriminator steps on them against the expert's, read
the rewards from the updated discriminator (no gradient flows into it from the policy), then take
one policy step. --shuffle_rewards is the control that asks whether the discriminator matters: it
centres the rewards and permutes them over the batch's tokens before the policy sees them.

A run is like train.py's (one process; no DDP, no torch.compile): out_dir/log.jsonl at each
evaluation (val nll, entropy, KL to pi_ref, greedy accuracy, and the discriminator's accuracy and
the mean reward, which show an adversarial run going wrong), out_dir/ckpt.pt readable by sample.py,
--resume bit for bit, a save on SIGINT/SIGTERM, the out_dir lock (runfiles.py).
"""

import copy
import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import DATA_FIELDS, IGNORE, Batches, Dataset, Problem, Vocab, answer_marker, collate, data_spec, \
    greedy_accuracy, load_dataset, policy_samples, problems_from, val_batches
from errors import UserError, run_main
from iqlearn import check_coefficients, exp_floor, masked_mean, policy_entropy
from model import GPT, GPTConfig
from runfiles import (MODEL_FIELDS, append_log, build_model, checkpoint_path, holding_out_dir, restore_training,
                      start_log, starting_point, training_checkpoint, what_is_kept, write_checkpoint)
from runtime import (DTYPES, MAX_SEED, StopSignals, autocast, check_ranges, cosine_lr, flag_of, grad_scaler, knob,
                     parse_config, pick_device, pick_dtype)


# ----------------------------------------------------------------------------------------------
# Configuration: every flag, with its default (fine-tuning values: GAIL starts from an MLE model)

@dataclass
class GailConfig:
    # the objective
    gamma: float = knob(1.0, "discount of the reward-to-go G_t = r_t + gamma G_t+1")
    mle_weight: float = knob(1.0, "weight of the MLE loss on expert data (the paper's stabiliser); 0 = pure GAIL")
    kl_coef: float = knob(0.1, "weight of the exact per-state KL(pi || pi_ref) to the initial policy")
    entropy_coef: float = knob(0.0, "subtract this times the mean entropy of pi on its own samples")
    shuffle_rewards: bool = knob(False, "control: centre the rewards and permute them over the batch's tokens")
    # the discriminator
    disc_steps: int = knob(1, "discriminator steps per policy step (k)", at_least=1)
    disc_warmup: int = knob(0, "first iterations that train the discriminator only", at_least=0)
    disc_learning_rate: float = knob(5e-4, "the discriminator's learning rate (AdamW, constant)")
    disc_n_layer: int | None = knob(None, "discriminator's blocks; default the policy's", at_least=1)
    disc_n_head: int | None = knob(None, "discriminator's heads; default the policy's", at_least=1)
    disc_n_embd: int | None = knob(None, "discriminator's width; default the policy's", at_least=1)
    # data (as train.py's)
    data: str | None = knob(None, ".jsonl pairs or .txt text; default: the built-in task")
    val_data: str | None = knob(None, "validation file; default: a held-out slice of --data")
    full_vocab: bool = knob(False, "all GPT-2 ids instead of the data's own")
    task_steps: int = knob(3, "built-in task: at most this many steps (2-4)")
    task_min_steps: int = knob(2, "built-in task: at least this many steps (2-4)")
    task_max_value: int = knob(50, "built-in task: size of starting amounts")
    task_train: int = knob(20000, "built-in task: training problems", at_least=1)
    # the policy (an --init_from checkpoint sets its shape)
    block_size: int = knob(128, "longest sequence in tokens", at_least=1)
    n_layer: int = knob(4, "transformer blocks", at_least=1)
    n_head: int = knob(8, "attention heads", at_least=1)
    n_embd: int = knob(256, "width of the residual stream", at_least=1)
    dropout: float = knob(0.0, "dropout probability while training")
    value_head: bool = knob(False, "keep (or add) IQLearn's value head; GAIL does not train it")
    # optimisation of the policy
    max_iters: int = knob(400, "total iterations (a resumed run continues to it)", at_least=1)
    lr_decay_iters: int | None = knob(None, "length of the cosine schedule; default max_iters")
    batch_size: int = knob(32, "expert rows, and as many policy samples, per iteration", at_least=1)
    learning_rate: float = knob(5e-4, "peak learning rate of the policy (AdamW)")
    min_lr: float = knob(5e-5, "learning rate at the end of the cosine decay")
    warmup_iters: int = knob(0, "linear learning-rate warm-up", at_least=0)
    weight_decay: float = knob(0.1, "AdamW weight decay of matrices (both networks)")
    grad_clip: float = knob(1.0, "clip each network's gradient norm to this; 0 = off")
    # evaluation and output
    eval_interval: int = knob(100, "evaluate and checkpoint every this many iterations", at_least=1)
    eval_iters: int = knob(10, "val batches per evaluation", at_least=1)
    eval_problems: int = knob(200, "val problems for greedy accuracy", at_least=0)
    out_dir: str = knob("out_gail", "where ckpt.pt and log.jsonl go")
    resume: bool = knob(False, "continue from out_dir/ckpt.pt")
    init_from: str | None = knob(None, "start the policy from these weights: a ckpt.pt (an MLE model)")
    # system
    device: str = knob("auto", "auto (cuda, mps, cpu) or a torch device")
    dtype: str = knob("auto", "autocast precision; auto: bf16 (else fp16) on CUDA, float32 elsewhere",
                      choices=["auto", *DTYPES])
    seed: int = knob(1337, "initialisation, data order and sampling", at_least=0, at_most=MAX_SEED)


DISC_FIELDS = ("disc_n_layer", "disc_n_head", "disc_n_embd")
FIXED_FIELDS = MODEL_FIELDS + DISC_FIELDS + ("value_head",) + DATA_FIELDS
PER_INVOCATION = ("out_dir", "resume", "device")


def check_config(c: GailConfig, settled: bool) -> None:
    """UserError for the first flag out of range. settled: the policy's shape is final; before
    --init_from or --resume has set it, the widths are not checked against head counts that the
    checkpoint's may still replace."""
    try:
        check_coefficients(gamma=c.gamma)
    except ValueError as e:
        raise UserError(f"--gamma: {e}") from None
    for name in ("mle_weight", "kl_coef", "entropy_coef"):
        if not (math.isfinite(getattr(c, name)) and getattr(c, name) >= 0):
            raise UserError(f"{flag_of(GailConfig, name)} must be a finite number >= 0, got {getattr(c, name)}")
    check_ranges(c)
    for heads, width in (("n_head", "n_embd"), ("disc_n_head", "disc_n_embd")) if settled else ():
        h, w = getattr(c, heads) or c.n_head, getattr(c, width) or c.n_embd
        if w % h:
            raise UserError(f"--{width} ({w}) must be divisible by --{heads} ({h})")
    if not 0 <= c.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {c.dropout}")
    if not 0 < c.min_lr <= c.learning_rate or not c.disc_learning_rate > 0:
        raise UserError("need 0 < --min_lr <= --learning_rate and --disc_learning_rate > 0")


# ----------------------------------------------------------------------------------------------
# The discriminator: its loss, and the reward it gives

def discriminator_loss(d_logits: torch.Tensor, targets: torch.Tensor, is_expert: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_D = E_E[softplus(-d)] + E_pi[softplus(d)], and the discriminator's balanced accuracy.

    d_logits [B, T, V]  the discriminator's d(s_t, .) for every next token (any float dtype)
    targets  [B, T]     the action taken at t (expert's or sampled), IGNORE at prompt and padding
    is_expert [B]       which rows are the expert's (label 1); the others are the policy's (label 0)
    -log D = -log sigmoid(d) = softplus(-d) and -log(1 - D) = softplus(d). Each side is averaged over
    its own action positions, as iqlearn_loss averages over the expert's: the prompt and padding
    (IGNORE) are never scored. Accuracy: the mean of the share of expert actions with D > 1/2 and
    the share of policy actions with D < 1/2.
    """
    is_action = targets != IGNORE
    d = d_logits.float().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expert, policy = is_action & is_expert[:, None], is_action & ~is_expert[:, None]
    loss = masked_mean(F.softplus(-d), expert) + masked_mean(F.softplus(d), policy)
    accuracy = (masked_mean((d > 0).float(), expert) + masked_mean((d < 0).float(), policy)) / 2
    return loss, accuracy.detach()


def answer_positions(targets: torch.Tensor, marker: int | None, eos: int) -> torch.Tensor:
    """[B, T] bool: the actions after a row's first `marker` ("####", GSM8K's answer line), EOS
    excluded: the final number, where a right and a wrong answer differ. None: no such token."""
    if marker is None:
        return torch.zeros_like(targets, dtype=torch.bool)
    after = (targets == marker).cumsum(1) > 0
    return after & (targets != marker) & (targets != eos) & (targets != IGNORE)


def answer_accuracy(d_logits: torch.Tensor, targets: torch.Tensor, is_expert: torch.Tensor,
                    answer: torch.Tensor) -> torch.Tensor:
    """discriminator_loss's balanced accuracy on the answer's tokens only (answer_positions). Over
    all tokens a discriminator that sees only the answer scores near 1/2; here it shows."""
    d = d_logits.float().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expert, policy = answer & is_expert[:, None], answer & ~is_expert[:, None]
    return ((masked_mean((d > 0).float(), expert) + masked_mean((d < 0).float(), policy)) / 2).detach()


def reward_from_logits(d_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """r_t = log D(s_t, a_t) - log(1 - D(s_t, a_t)) = d(s_t, a_t), 0 where t is not an action: [B, T].

    Why the logit: at the discriminator's optimum D* = rho_E / (rho_E + rho_pi) (the two occupancies
    of (s, a)), d* = log rho_E(s, a) - log rho_pi(s, a), so the policy's expected return is
    -KL(rho_pi || rho_E): maximising it matches the expert's occupancy. The other common forms are
    one-sided: -log(1 - D) > 0 pays for every token, so a policy gains by never ending; log D < 0
    charges for every token, so it gains by ending early. Their sum, the logit, has either sign, so
    it pulls on the length only as far as its mean is not zero. That mean is not zero in general: at
    the discriminator's optimum the expected reward is -KL(rho_pi || rho_E) <= 0, a charge per token
    while the policy differs from the expert; under reward-to-go a sample's return then falls with
    its length.
    """
    d = d_logits.float().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets != IGNORE, d, 0.0).detach()


# ----------------------------------------------------------------------------------------------
# The policy's update: reward-to-go, baseline, policy gradient and the stabilisers

def reward_to_go(rewards: torch.Tensor, is_action: torch.Tensor, done: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1}, with G = 0 after a terminal action (done: a_t is EOS); [B, T].
    A sample cut before EOS ends at its last token (no value to bootstrap from). 0 off actions."""
    r = torch.where(is_action, rewards, 0.0)
    G, running = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.size(1))):
        running = r[:, t] + gamma * torch.where(done[:, t], 0.0, running)
        G[:, t] = running
    return torch.where(is_action, G, 0.0)


def leave_one_out_baseline(G: torch.Tensor, is_action: torch.Tensor) -> torch.Tensor:
    """b_t: the mean reward-to-go of the *other* samples of the batch at the same response step k
    (the k-th generated token, wherever the prompt ends); 0 where no other sample reaches step k.

    Why this baseline and not a learned value (IQLearn's value head would fit): it has no parameters
    to train and nothing to lag behind the discriminator, whose rewards move every iteration; and
    since it never looks at the sample's own actions, E[(G_t - b_t) grad log pi(a_t|s_t)] keeps the
    policy gradient unbiased. It removes what depends on the step (rewards summed over the rest of
    the text), not what depends on the prompt; a learned per-state value could remove more."""
    step = torch.arange(G.size(1), device=G.device) - is_action.float().argmax(dim=1, keepdim=True)
    step = step.clamp(min=0)
    sums = torch.zeros(G.size(1), device=G.device).index_add_(0, step[is_action], G[is_action])
    counts = torch.zeros(G.size(1), device=G.device).index_add_(0, step[is_action], torch.ones_like(G[is_action]))
    others = (counts[step] - 1).clamp(min=1)
    b = (sums[step] - G) / others
    return torch.where(is_action & (counts[step] > 1), b, 0.0)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """E_s[KL(pi(.|s) || pi_ref(.|s))] = E_s[sum_a pi(a|s) (log pi(a|s) - log pi_ref(a|s))] over
    the states where mask is True, computed exactly over the vocabulary.

    Not the sampled log-ratio log pi(a_t|s_t) - log pi_ref(a_t|s_t) at the policy's own tokens: its
    value estimates the KL, but its gradient, grad log pi(a_t|s_t) with a_t ~ pi, averages to zero
    (E_pi[grad log pi] = grad sum_a pi = 0), so it does not hold the policy near the reference."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp_ref = F.log_softmax(ref_logits.float(), dim=-1)
    p = logp.clamp(min=exp_floor(logp.dtype)).exp()  # no subnormal exp (iqlearn.exp_floor)
    return masked_mean((p * (logp - logp_ref)).sum(-1), mask)


def policy_loss(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor,
                n_expert: int, c: GailConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_pi = pg + mle_weight * nll + kl_coef * kl - entropy_coef * entropy, on one batch whose
    first n_expert rows are the expert's and the rest the policy's samples (ref_logits: pi_ref's on
    the samples' rows only; advantages G_t - b_t on them, no gradient).

      pg      = -E_pi[(G_t - b_t) log pi(a_t|s_t)]     policy gradient (REINFORCE with a baseline)
      nll     = E_E[-log pi(a|s)]                      MLE on the expert's actions
      kl      = E_pi[KL(pi(.|s_t) || pi_ref(.|s_t))]   at the states the policy visits
      entropy = E_pi[H(pi(.|s_t))]

    The advantage is not divided by its standard deviation: normalised, it would give the policy
    gradient full strength even while the discriminator is untrained and its rewards are noise; raw,
    it is as small as the rewards' differences are."""
    y_expert, y_policy = targets[:n_expert], targets[n_expert:]
    own = logits[n_expert:]
    is_sampled = y_policy != IGNORE
    logp_taken = F.log_softmax(own.float(), dim=-1).gather(-1, y_policy.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    pg = -masked_mean(advantages * logp_taken, is_sampled)
    nll = F.cross_entropy(logits[:n_expert].float().flatten(0, 1), y_expert.flatten(), ignore_index=IGNORE)
    kl = kl_to_reference(own, ref_logits, is_sampled)
    entropy = policy_entropy(own, y_policy, IGNORE)
    loss = pg + c.mle_weight * nll + c.kl_coef * kl - c.entropy_coef * entropy
    return loss, {"pg": pg.detach(), "nll": nll.detach(), "kl": kl.detach(), "entropy": entropy.detach()}


# ----------------------------------------------------------------------------------------------
# The run: its parts, setup, checkpoint

@dataclass
class Run:
    config: GailConfig
    dataset: Dataset
    val_problems: list[Problem]
    policy: GPT
    reference: GPT                  # the initial policy, frozen: the KL penalty's pi_ref
    discriminator: GPT
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler    # fp16 autocast's loss scaling, one per network (off otherwise)
    disc_scaler: torch.amp.GradScaler
    batches: Batches
    device: str
    dtype: torch.dtype
    answer_marker: int | None = None   # the model id of "####", which opens a GSM8K answer (None: absent)
    iter_num: int = 0
    best_val_loss: float = math.inf
    # The statistics since the last evaluation, as running sums (its log row's means), and whether a
    # signal stopped the run in an iteration that evaluates before it evaluated: both in the
    # checkpoint, so a resumed run logs what an uninterrupted one does.
    interval: dict = dataclasses.field(default_factory=lambda: {"sums": {}, "counts": {}})
    eval_owed: bool = False


def discriminator_config(c: GailConfig, vocab_size: int) -> GPTConfig:
    """The policy's architecture with the --disc_* sizes where given."""
    return GPTConfig(vocab_size=vocab_size, block_size=c.block_size, n_layer=c.disc_n_layer or c.n_layer,
                     n_head=c.disc_n_head or c.n_head, n_embd=c.disc_n_embd or c.n_embd, dropout=c.dropout)


def setup(c: GailConfig, resumed: dict | None, source: dict | None, device: str) -> Run:
    """Configuration -> the three networks, two optimizers, data, and where to start."""
    dtype = pick_dtype(c.dtype, device)
    torch.manual_seed(c.seed)
    dataset = load_dataset(data_spec(c), c.block_size, Vocab.from_state(source["vocab"]) if source else None,
                           grow=resumed is None)  # fine-tuning data may bring new tokens
    problems = problems_from(dataset.vocab, dataset.records["val"], c.block_size, c.eval_problems) \
        if dataset.checkable else []
    policy = build_model(c, dataset.vocab, source).to(device)
    if policy.value_head is not None:  # softmax ignores it and nothing here trains it
        policy.value_head.requires_grad_(False)
    reference = copy.deepcopy(policy)
    discriminator = GPT(discriminator_config(c, dataset.vocab.size)).to(device)
    if resumed:
        reference.load_state_dict(resumed["reference"])
        discriminator.load_state_dict(resumed["discriminator"])
    reference.eval().requires_grad_(False)
    optimizer = policy.configure_optimizer(c.weight_decay, c.learning_rate)
    disc_optimizer = discriminator.configure_optimizer(c.weight_decay, c.disc_learning_rate)
    scaler, disc_scaler = grad_scaler(device, dtype), grad_scaler(device, dtype)
    batches = Batches(dataset.train, c.batch_size, c.seed)
    run = Run(c, dataset, problems, policy, reference, discriminator, optimizer, disc_optimizer, scaler, disc_scaler,
              batches, device, dtype, answer_marker(dataset.vocab))
    if resumed:
        restore_training(resumed, optimizer, scaler, batches)
        disc_optimizer.load_state_dict(resumed["disc_optimizer"])
        disc_scaler.load_state_dict(resumed["disc_scaler"])
        run.iter_num, run.best_val_loss = resumed["iter_num"], resumed["best_val_loss"]
        run.interval = resumed.get("interval", run.interval)  # (a checkpoint of an earlier version has none)
        run.eval_owed = resumed.get("eval_owed", False)
    return run


def save(run: Run) -> None:
    """runfiles' checkpoint of the policy (what sample.py reads), plus GAIL's other networks."""
    checkpoint = training_checkpoint(
        run.policy, run.optimizer, run.scaler, run.batches, config=run.config, vocab=run.dataset.vocab,
        iter_num=run.iter_num, best_val_loss=run.best_val_loss, algorithm="gail",
        reference=run.reference.state_dict(), discriminator=run.discriminator.state_dict(),
        disc_model_args=dataclasses.asdict(run.discriminator.config), disc_optimizer=run.disc_optimizer.state_dict(),
        disc_scaler=run.disc_scaler.state_dict(), interval=run.interval, eval_owed=run.eval_owed)
    write_checkpoint(checkpoint, run.config.out_dir, False, 0, 1, run.device)


# ----------------------------------------------------------------------------------------------
# One iteration: sample, k discriminator steps, rewards, one policy step

def step_with_clip(model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
                   clip: float) -> None:
    """Backward, clip the gradient norm (0: no clipping), step, and clear the gradients."""
    scaler.scale(loss).backward()
    if clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def discriminator_steps(run: Run, x: torch.Tensor, y: torch.Tensor, is_expert: torch.Tensor) -> dict[str, float]:
    """disc_steps steps of L_D on one batch; the accuracy before the first (on samples it has not
    seen: the measure logged), overall and at the answer's tokens, and the last loss."""
    answer = answer_positions(y, run.answer_marker, run.dataset.vocab.eos)
    for step in range(run.config.disc_steps):
        with autocast(run.device, run.dtype):
            d_logits = run.discriminator(x)
        loss, accuracy = discriminator_loss(d_logits, y, is_expert)
        if step == 0:
            first = {"disc_accuracy": float(accuracy)}
            if answer.any():
                first["disc_answer_accuracy"] = float(answer_accuracy(d_logits, y, is_expert, answer))
        step_with_clip(run.discriminator, run.disc_optimizer, run.disc_scaler, loss, run.config.grad_clip)
    return {**first, "disc_loss": loss.item()}


@torch.no_grad()
def advantages_of(run: Run, x: torch.Tensor, y: torch.Tensor, done: torch.Tensor, n_expert: int
                  ) -> tuple[torch.Tensor, float]:
    """The samples' advantages G_t - b_t from the discriminator's rewards, and their mean reward."""
    run.discriminator.eval()
    with autocast(run.device, run.dtype):
        rewards = reward_from_logits(run.discriminator(x[n_expert:]), y[n_expert:])
    run.discriminator.train()
    is_action = y[n_expert:] != IGNORE
    if run.config.shuffle_rewards:
        rewards = shuffled_rewards(rewards, is_action)
    G = reward_to_go(rewards, is_action, done[n_expert:], run.config.gamma)
    return G - leave_one_out_baseline(G, is_action), float(masked_mean(rewards, is_action))


def shuffled_rewards(rewards: torch.Tensor, is_action: torch.Tensor) -> torch.Tensor:
    """The control: the batch's rewards minus their mean, each on a random action of the batch. Not
    centred, the mean alone would remain, and under reward-to-go a constant reward per token is a
    pure signal on the length of a sample (a negative mean: shorter is better)."""
    centred = rewards[is_action] - rewards[is_action].mean()
    out = torch.zeros_like(rewards)
    out[is_action] = centred[torch.randperm(centred.numel(), device=rewards.device)]
    return out


def train_step(run: Run) -> dict[str, float]:
    """One iteration; its statistics and timings (seconds)."""
    c, t0 = run.config, time.time()
    expert = run.batches.next()
    with autocast(run.device, run.dtype):
        samples = policy_samples(run.policy, expert, run.dataset)
    x, y, done = (torch.from_numpy(a).to(run.device) for a in collate(expert + samples, with_last_state=True))
    is_expert = torch.arange(len(x), device=run.device) < len(expert)
    t1 = time.time()
    stats = discriminator_steps(run, x, y, is_expert)
    advantages, stats["reward_mean"] = advantages_of(run, x, y, done, len(expert))
    t2 = time.time()
    if run.iter_num >= c.disc_warmup:
        lr = cosine_lr(run.iter_num, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters or c.max_iters)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with autocast(run.device, run.dtype):
            logits = run.policy(x)
            with torch.no_grad():
                ref_logits = run.reference(x[len(expert):])
        loss, parts = policy_loss(logits, ref_logits, y, advantages, len(expert), c)
        if not torch.isfinite(loss):
            return {**stats, "non_finite": 1.0}
        step_with_clip(run.policy, run.optimizer, run.scaler, loss, c.grad_clip)
        stats.update({k: v.item() for k, v in parts.items()}, loss=loss.item(), lr=lr)
    run.iter_num += 1
    t3 = time.time()
    return {**stats, "sample_s": t1 - t0, "disc_s": t2 - t1, "policy_s": t3 - t2}


# ----------------------------------------------------------------------------------------------
# Evaluation, and the loop

@torch.no_grad()
def val_metrics(run: Run) -> dict[str, float]:
    """On the first eval_iters val batches: the policy's nll of the expert's actions, its entropy and
    its KL to pi_ref there; and greedy accuracy on the val problems (data.greedy_accuracy)."""
    c = run.config
    run.policy.eval()
    sums = {"val_nll": 0.0, "val_entropy": 0.0, "val_kl": 0.0}
    for items in val_batches(run.dataset.val, c.batch_size, c.eval_iters):
        x, y, _ = (torch.from_numpy(a).to(run.device) for a in collate(items))
        with autocast(run.device, run.dtype):
            logits, ref_logits = run.policy(x), run.reference(x)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        for k, v in (("val_nll", nll), ("val_entropy", policy_entropy(logits, y, IGNORE)),
                     ("val_kl", kl_to_reference(logits, ref_logits, y != IGNORE))):
            sums[k] += float(v) / c.eval_iters
    if run.val_problems:
        with autocast(run.device, run.dtype):
            sums["accuracy"] = greedy_accuracy(run.policy, run.dataset.vocab, run.val_problems, c.block_size)
    run.policy.train()
    return sums


def add_to_interval(interval: dict, stats: dict[str, float]) -> None:
    """One iteration's statistics into the running sums and counts since the last evaluation."""
    for k, v in stats.items():
        interval["sums"][k] = interval["sums"].get(k, 0.0) + v
        interval["counts"][k] = interval["counts"].get(k, 0) + 1


def log_evaluation(run: Run) -> None:
    """Evaluate; append it and the interval's means (discriminator accuracy, reward, losses, ms per
    iteration) to out_dir/log.jsonl; print a line."""
    result = val_metrics(run)
    sums, counts = run.interval["sums"], run.interval["counts"]
    means = {k: sums.get(k, 0.0) / max(counts.get(k, 0), 1)
             for k in ("disc_accuracy", "disc_loss", "reward_mean", "pg", "nll", "kl", "entropy", "lr")}
    if "disc_answer_accuracy" in counts:   # data with GSM8K's "#### N" answers
        means["disc_answer_accuracy"] = sums["disc_answer_accuracy"] / counts["disc_answer_accuracy"]
    ms = {f"{k[:-2]}_ms": 1000 * sums.get(k, 0.0) / max(counts.get(k, 0), 1) for k in ("sample_s", "disc_s", "policy_s")}
    ms["update_ms"] = ms["disc_ms"] + ms["policy_ms"]
    append_log(run.config.out_dir, {"iter": run.iter_num, **result, **means, **ms})
    run.best_val_loss = min(run.best_val_loss, result["val_nll"])
    tqdm.write(f"iter {run.iter_num}: val nll {result['val_nll']:.4f}, kl {result['val_kl']:.4f}"
               + (f", greedy accuracy {result['accuracy']:.3f}" if "accuracy" in result else "")
               + f"; discriminator accuracy {means['disc_accuracy']:.3f}, reward {means['reward_mean']:+.3f}; "
               f"{ms['sample_ms']:.0f} + {ms['update_ms']:.0f} ms/iter sampling + update")


def evaluates_at(iter_num: int, c: GailConfig) -> bool:
    return iter_num % c.eval_interval == 0 or iter_num == c.max_iters


def evaluate_and_save(run: Run) -> None:
    log_evaluation(run)
    run.interval, run.eval_owed = {"sums": {}, "counts": {}}, False
    save(run)


def train_loop(run: Run, stop: StopSignals) -> int:
    """Train to max_iters, evaluating and saving every eval_interval iterations and at the end.
    Exit code: 0 done; 128 + signal on SIGINT/SIGTERM (saved first; the evaluation it skipped is
    done first on --resume); 1 on a non-finite loss (not taken, not saved). A failed save raises
    WriteError (exit 1) after the progress bar has closed."""
    c = run.config
    with tqdm(total=c.max_iters, initial=run.iter_num, dynamic_ncols=True) as bar:
        if run.eval_owed:
            evaluate_and_save(run)
        while run.iter_num < c.max_iters:
            stats = train_step(run)
            if stats.get("non_finite"):
                bar.close()
                print(f"error: the policy loss is not finite at iter {run.iter_num}; stopping "
                      f"({what_is_kept(c.out_dir)}); try a lower --learning_rate", file=sys.stderr)
                return 1
            add_to_interval(run.interval, stats)
            bar.update(1)
            bar.set_postfix(d_acc=f"{stats['disc_accuracy']:.2f}", r=f"{stats['reward_mean']:+.2f}",
                            nll=f"{stats.get('nll', math.nan):.3f}", kl=f"{stats.get('kl', math.nan):.4f}",
                            refresh=False)
            if signum := stop.signum:
                run.eval_owed = evaluates_at(run.iter_num, c)
                save(run)
                bar.close()
                print(f"stopped by {signal.Signals(signum).name} at iter {run.iter_num}; saved "
                      f"{checkpoint_path(c.out_dir)}; --resume continues", file=sys.stderr)
                return 128 + signum
            if evaluates_at(run.iter_num, c):
                evaluate_and_save(run)
    return 0


def gail(argv: list[str] | None = None) -> int:
    """The whole run: configuration, the out_dir lock, starting point, setup, the loop; its exit code."""
    c, given = parse_config(GailConfig, argv, "gail.py", __doc__.split("\n\n")[0])
    check_config(c, settled=not (c.resume or c.init_from))
    with StopSignals() as stop:
        device = pick_device(c.device)
        with holding_out_dir(c.out_dir, 0, 1, device):
            c, resumed, source = starting_point(c, given, FIXED_FIELDS, PER_INVOCATION, algorithm="gail")
            check_config(c, settled=True)
            run = setup(c, resumed, source, device)
            start_log(c.out_dir, resumed and resumed["iter_num"])
            print(f"{'resuming at iter ' + str(run.iter_num) if resumed else 'GAIL'}: policy "
                  f"{run.policy.num_params() / 1e6:.2f}M params, discriminator "
                  f"{run.discriminator.num_params() / 1e6:.2f}M, vocab {run.dataset.vocab.size}, device {device}, "
                  f"mle_weight {c.mle_weight}, kl_coef {c.kl_coef}"
                  + (", rewards shuffled (control)" if c.shuffle_rewards else ""))
            return train_loop(run, stop)


def main(argv: list[str] | None = None) -> int:
    return run_main("gail.py", lambda: gail(argv))


if __name__ == "__main__":
    sys.exit(main())
