"""IQLearn in your own Hugging Face training loop: iqlearn.py's loss in place of the model's `labels=` loss.

    python examples/hf_iqlearn.py --model gpt2 --lambda 0.1 --gamma 0.9 --value_head
    python examples/hf_iqlearn.py --model out_hf --data pairs.jsonl   # a folder export.py wrote; your pairs

iqlearn_loss takes logits, so any causal LM's loop can use it: copy iqlearn.py (one file, torch
only) into your project and mind three things (iqlearn_step below does all three):

1. The shift. A causal LM's logits at position t are Q(s_t, .), the scores of token t + 1; with
   labels= the model shifts inside. targets_and_done shifts the labels instead: targets[:, t] =
   labels[:, t + 1], the expert's action a_t, and -100 in the last column, where no token follows.
   iqlearn_loss then takes all the logits, so every action's next state s_{t + 1} has its logits at
   column t + 1, even the last action of a row cut before its end-of-text: the TD term's positions
   are exactly the actions, whatever the padding (a trainer that sums over micro-batches normalises
   both terms by one count of actions: examples/trl_iqlearn.py).
2. Actions and terminals. Labels are -100 on the prompt and on padding, as for labels=; pass
   ignore_index=-100. done = (targets == eos_id) marks the end-of-text action: the state after
   it is terminal, V = 0, so the TD term never reads the logits of what follows (padding). Build the
   labels from each row's length, not from input_ids == pad_token_id: GPT-2 pads with its EOS token,
   and masking every pad id would mask the real EOS too, leaving no action terminal.
3. lam and gamma. lam = 0 is exactly the model's own cross-entropy (value and gradient); lam > 0 adds
   the TD term E[(Q(s,a) - gamma V(s'))^2], which ties each state's soft value V(s) = logsumexp
   Q(s, .) to the next one's.

A value head, for a pretrained model. Softmax ignores a per-state offset of the logits, so a
pretrained model's logits carry an arbitrary one, and the TD term reads V(s) from it: without a
head, lam > 0 can move the values only by reshaping the policy. ValueOffset, a zero-initialised
nn.Linear(hidden, 1) on the last hidden state added to every logit of its state, lets V move on its
own: the policy, sampling and cross-entropy are unchanged, and at lam = 0 it gets no gradient
(train.py's --value_head; it is not part of the saved Hugging Face model, and need not be: it does
not change the policy). docs/huggingface.md has the whole story.
"""

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # iqlearn.py is one folder up
from errors import Parser, UserError, run_main  # the project's one-line errors; your loop needs none of them
from gpt2 import first_line  # noqa: I001  (after the path is set)
from iqlearn import check_coefficients, iqlearn_loss
from runtime import MAX_SEED

IGNORE = -100  # Hugging Face's ignore index for labels


class ValueOffset(nn.Module):
    """v(s) = w . h_t + b from the last hidden state, added to every logit of state s_t:
    Q(s_t, .) = logits + v(s_t). Zero-initialised, so the model starts as the function it was."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.v = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.v.weight)
        nn.init.zeros_(self.v.bias)

    def forward(self, logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return logits + self.v(hidden)  # [B, T, 1] broadcast: the same v(s_t) for every token


def batch_from_ids(examples: list[tuple[list[int], list[int]]], eos_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """(prompt ids, response ids) pairs -> input_ids, attention_mask and labels [B, T], right-padded.
    A row is prompt + response + EOS; its labels are the ids of the response and the EOS, -100 on
    the prompt and on padding (set from the lengths, so the EOS keeps its label when pad_id == eos_id)."""
    rows = [prompt + response + [eos_id] for prompt, response in examples]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (row, (prompt, _)) in enumerate(zip(rows, examples)):
        input_ids[b, :len(row)] = torch.tensor(row)
        labels[b, len(prompt):len(row)] = torch.tensor(row[len(prompt):])
        attention_mask[b, :len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def targets_and_done(labels: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face labels [B, T] -> iqlearn_loss's targets and done [B, T], aligned with the logits:
    targets[:, t] = labels[:, t + 1] (a_t = token t + 1), IGNORE in the last column; done marks the
    end-of-text action, after which the state is terminal (V(s_{t+1}) = 0)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    return targets, targets == eos_id


def iqlearn_step(model: nn.Module, batch: dict[str, torch.Tensor], eos_id: int, lam: float, gamma: float = 1.0,
                 head: ValueOffset | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The IQLearn loss nll + lam * td of a Hugging Face causal LM on a batch with labels."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=head is not None)
    logits = out.logits
    if head is not None:  # GPT-2's last hidden state is after its final LayerNorm, as our value head's input
        logits = head(logits, out.hidden_states[-1])
    targets, done = targets_and_done(batch["labels"], eos_id)
    return iqlearn_loss(logits, targets, lam=lam, gamma=gamma, done=done, ignore_index=IGNORE)


# ----------------------------------------------------------------------------------------------
# A small runnable loop around iqlearn_step

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="hf_iqlearn.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="gpt2", help="a Hugging Face causal LM: a Hub name or a local folder")
    p.add_argument("--data", default=None, help='JSONL of {"prompt", "response"} (or GSM8K\'s {"question", '
                                                '"answer"}); default: problems of the built-in task')
    add_loss_flags(p)
    p.add_argument("--steps", type=int, default=50, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    check_flags(p, args, ["steps", "batch_size"])
    return args


def add_loss_flags(p: Parser) -> None:
    """The loss's flags (trl_iqlearn.py takes them too)."""
    p.add_argument("--lambda", dest="lam", type=float, default=0.1, help="weight of the TD term; 0 = MLE")
    p.add_argument("--gamma", type=float, default=0.9, help="discount in r_t = Q(s_t,a_t) - gamma V(s_t+1)")
    p.add_argument("--value_head", action="store_true", help="add a zero-initialised per-state value offset")


def check_flags(p: Parser, args: argparse.Namespace, counts: list[str]) -> None:
    """lambda and gamma in range, the counts >= 1, the seed and the learning rate usable (trl_iqlearn.py's too)."""
    try:
        check_coefficients(lam=args.lam, gamma=args.gamma)
    except ValueError as e:
        p.error(f"{e} (--lambda, --gamma)")
    if min(getattr(args, name) for name in counts) < 1:
        flags = [f"--{name}" for name in counts]
        p.error(f"{', '.join(flags[:-1])} and {flags[-1]} must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        p.error(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        p.error(f"--learning_rate must be a finite number > 0, got {args.learning_rate}")


def load(model_name: str) -> tuple:
    """The tokenizer and causal LM of a Hub name or folder (transformers: an optional package)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise UserError("this example needs the optional package: pip install transformers") from None
    try:
        return AutoTokenizer.from_pretrained(model_name), AutoModelForCausalLM.from_pretrained(model_name)
    except Exception as e:  # no such folder or model, offline, a truncated or refused weights file: many types
        raise UserError(f"could not load {model_name} ({first_line(e)})") from None


def pairs(data: str | None) -> list[dict]:
    """The training pairs: a JSONL file's, or 256 problems of the built-in task."""
    from data import as_pair, read_jsonl
    from task import TaskConfig, builtin_task
    if data:
        return read_jsonl(data)
    return [as_pair(p) for p in builtin_task(TaskConfig(n_train=256, n_val=1, n_test=1))["train"]]


def main(argv: list[str] | None = None) -> int:
    return run_main("hf_iqlearn.py", lambda: train(parse_args(argv)))


def train(args: argparse.Namespace) -> int:
    tokenizer, model = load(args.model)
    records = pairs(args.data)
    torch.manual_seed(args.seed)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise UserError(f"{args.model}'s tokenizer has no end-of-text token to be terminal")
    pad_id = eos_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # An empty prompt starts from EOS, the state before any text (as data.prompt_ids does): the
    # first response token needs a state whose logits score it.
    examples = [(ids(r["prompt"]) or [eos_id], ids(r["response"])) for r in records]
    fitting = [(p, r) for p, r in examples if len(p) + len(r) + 1 <= tokenizer.model_max_length]
    if not fitting:
        raise UserError(f"no example fits in {tokenizer.model_max_length} tokens")
    print(f"{len(fitting)} examples ({len(examples) - len(fitting)} longer than {tokenizer.model_max_length} "
          f"tokens left out), lambda {args.lam}, gamma {args.gamma}, value head {args.value_head}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    head = ValueOffset(model.config.hidden_size).to(device) if args.value_head else None
    model.to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate)
    model.train()
    for step in range(args.steps):
        chosen = torch.randint(len(fitting), (args.batch_size,)).tolist()
        batch = {k: v.to(device) for k, v in batch_from_ids([fitting[i] for i in chosen], eos_id, pad_id).items()}
        loss, stats = iqlearn_step(model, batch, eos_id, args.lam, args.gamma, head)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"step {step + 1}: loss {loss.item():.4f}, nll {stats['nll']:.4f}, td {stats['td']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
