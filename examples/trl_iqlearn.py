"""IQLearn in TRL: an SFTTrainer whose loss is iqlearn.py's nll + lam * td.

    python examples/trl_iqlearn.py --model out_tiny_hf --lambda 0.1 --gamma 0.9 --value_head --steps 20
    python examples/trl_iqlearn.py --model out_tiny_hf --trainer sft --steps 20   # TRL's own SFTTrainer
    accelerate launch --num_processes 8 examples/trl_iqlearn.py --model ...        # 8 GPUs (DDP)

In your own script, with this folder on sys.path (this file imports the repository's iqlearn.py
and runtime.py, and hf_iqlearn.py's targets_and_done and ValueOffset), use IQLearnConfig and
IQLearnTrainer as SFTConfig and SFTTrainer (docs/huggingface.md, "TRL"):

    config = IQLearnConfig(output_dir="out_trl", lam=0.1, gamma=0.9, value_head=True, ...)
    trainer = IQLearnTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

TRL does the data: a {"prompt", "completion"} dataset is tokenized with the end-of-text token
appended to each completion and labels -100 on the prompt (completion-only loss) and on padding,
set per example, so a pad token equal to end-of-text (GPT-2's) does not mask the real one.
IQLearnTrainer replaces only compute_loss, and gets these details right:

- the end-of-text action is terminal: done = (targets == eos_id), V(s') = 0 after it;
- the targets are the labels shifted onto all the logits (hf_iqlearn.targets_and_done), so the TD
  term's positions are exactly the actions: each micro-batch's sum of nll and td is divided by
  num_items_in_batch, the actions of every micro-batch and process of the optimizer step, which
  transformers counts. 2 micro-batches of 4 give the gradient of 1 batch of 8, 2 processes of 4
  that of 1 process of 8, for both terms;
- padding_free / packing (several sequences in one row, position ids restarting): TRL labels the
  first token of each sequence -100, so no action crosses a boundary, and the last action of each
  sequence reads V(s') from its own last token (0 after end-of-text);
- with value_head, a zero-initialised ValueOffset is added to every logit of a state inside the
  model's forward (so FSDP and DeepSpeed see it as part of the model): the policy is unchanged, V can
  move. It is saved with the model's weights (from_pretrained ignores it: the policy is the same);
- nll, td, the mean implicit reward and the mean soft value go to the trainer's logs.

Refused, with one line: loss_type="dft", label smoothing, compute_loss_func (another loss);
context or sequence parallelism (V(s') would sit on another process's shard of the sequence); the
MoE router loss (set router_aux_loss_coef=0.0); a tokenizer without an end-of-text token.
"""

import argparse
import functools
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass, field

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # iqlearn.py is one folder up
sys.path.insert(0, HERE)                   # hf_iqlearn.py beside this file
from hf_iqlearn import IGNORE, ValueOffset, add_loss_flags, check_flags, load, pairs, targets_and_done  # noqa: E402
from iqlearn import check_coefficients, iqlearn_loss  # noqa: E402
from errors import Parser, UserError, run_main  # noqa: E402  (the project's one-line errors)

try:
    import datasets
    import transformers
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer
except ImportError:
    print("trl_iqlearn.py: error: this example needs the optional packages: pip install trl accelerate datasets",
          file=sys.stderr)
    sys.exit(2)

STATS = ("nll", "td", "reward_mean", "value_mean")  # iqlearn_loss's statistics, logged under these names


@dataclass
class IQLearnConfig(SFTConfig):
    """SFTConfig plus the objective's coefficients (iqlearn.py) and the optional value head."""
    lam: float = field(default=0.1, metadata={"help": "weight of the TD term; 0 = MLE"})
    gamma: float = field(default=0.9, metadata={"help": "discount in r_t = Q(s_t, a_t) - gamma V(s_t+1)"})
    value_head: bool = field(default=False, metadata={"help": "add a zero-initialised per-state value offset"})

    def __post_init__(self):
        check_coefficients(lam=self.lam, gamma=self.gamma)
        super().__post_init__()


def add_value_offset(model: torch.nn.Module) -> ValueOffset:
    """Give model a zero-initialised ValueOffset, applied inside its forward when it is called with
    value_offset=True: logits = Q(s, .) = lm_head(h) + v(h). Without the flag (generation) the
    forward is unchanged."""
    weight = model.get_output_embeddings().weight
    head = ValueOffset(model.config.get_text_config().hidden_size).to(weight.device, weight.dtype)
    model.add_module("iqlearn_value_head", head)  # a submodule: in the optimizer, DDP/FSDP, the checkpoint
    forward = model.forward

    @functools.wraps(type(model).forward)  # the signature Trainer and generate inspect
    def offset_forward(self, *args, value_offset: bool = False, **kwargs):
        if not value_offset:
            return forward(*args, **kwargs)
        out = forward(*args, output_hidden_states=True, **kwargs)
        out.logits = self.iqlearn_value_head(out.logits, out.hidden_states[-1])  # the last, normed, hidden state
        out.hidden_states = None
        return out

    model.forward = types.MethodType(offset_forward, model)
    return head


class IQLearnTrainer(SFTTrainer):
    """SFTTrainer with the offline IQLearn loss nll + lam * td (module docstring)."""

    _tag_names = ["trl", "sft", "iqlearn"]
    _name = "IQLearn"

    def __init__(self, model, args: IQLearnConfig, **kwargs):
        if not isinstance(args, IQLearnConfig):
            raise TypeError("IQLearnTrainer needs an IQLearnConfig (SFTConfig with lam, gamma, value_head)")
        if args.loss_type != "nll" or args.label_smoothing_factor > 0 or kwargs.get("compute_loss_func"):
            raise ValueError("IQLearnTrainer computes its own loss: leave loss_type='nll', "
                             "label_smoothing_factor=0 and compute_loss_func unset")
        super().__init__(model, args=args, **kwargs)
        parallel = self.accelerator.parallelism_config
        if parallel is not None and (parallel.cp_enabled or parallel.sp_enabled):
            raise ValueError("IQLearnTrainer does not support context or sequence parallelism: the TD term reads "
                             "V(s') at the next position, which may sit on another process's shard")
        if self.aux_loss_enabled:
            raise ValueError("IQLearnTrainer does not add the MoE router loss: set router_aux_loss_coef=0.0")
        self.eos_id = getattr(self.processing_class, "tokenizer", self.processing_class).eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no end-of-text token to make terminal (set eos_token)")
        self.value_head = add_value_offset(self.model) if args.value_head else None
        self._stat_sums = {}  # mode -> [sum of each of STATS times its actions..., actions]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        model_inputs["use_cache"] = False
        if self.value_head is not None:
            model_inputs["value_offset"] = True
        outputs = model(**model_inputs)  # the model's own forward: Q(s_t, .) = its logits (+ v(s_t))
        targets, done = targets_and_done(inputs["labels"], self.eos_id)
        loss, stats = iqlearn_loss(outputs.logits, targets, lam=self.args.lam, gamma=self.args.gamma, done=done,
                                   ignore_index=IGNORE)
        n_actions = (targets != IGNORE).sum()
        if n_actions == 0:  # all prompt (e.g. after truncation): a zero that keeps the graph, not 0/0
            loss = outputs.logits.sum() * 0.0
        elif num_items_in_batch is not None:
            # Both means are over this micro-batch's actions (td's positions are the actions):
            # times n / N, they become sums over the N actions of the whole optimizer step.
            loss = loss * (n_actions / num_items_in_batch)
            if self.args.average_tokens_across_devices:  # N counts every process's; DDP averages gradients
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self.add_stats(mode, stats, n_actions)
        return (loss, outputs) if return_outputs else loss

    def add_stats(self, mode: str, stats: dict[str, torch.Tensor], n_actions: torch.Tensor) -> None:
        """Add up each statistic times its actions, over the processes, until the next log."""
        # nan_to_num: a micro-batch without actions has nll 0/0; it still joins the gather (a collective)
        sums = torch.stack([stats[k].float().nan_to_num() * n_actions for k in STATS] + [n_actions.float()])
        sums = self.accelerator.gather(sums[None]).sum(0).cpu()
        self._stat_sums[mode] = sums if mode not in self._stat_sums else self._stat_sums[mode] + sums

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Means over all the actions since the last log: over micro-batches and processes, so an optimizer
        # step of 2 micro-batches of 4 logs the nll and td of 1 batch of 8, as its loss.
        mode = "train" if self.model.training else "eval"
        sums = self._stat_sums.pop(mode, None)
        if sums is not None:
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: (s / max(sums[-1], 1.0)).item() for k, s in zip(STATS, sums[:-1])})
        super().log(logs, start_time)


# ----------------------------------------------------------------------------------------------
# A small runnable script around IQLearnTrainer

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="trl_iqlearn.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a Hugging Face causal LM: a folder export.py wrote, or a Hub name")
    p.add_argument("--data", default=None, help='JSONL of {"prompt", "response"} (or GSM8K\'s {"question", '
                                                '"answer"}); default: problems of the built-in task')
    p.add_argument("--trainer", choices=("iqlearn", "sft"), default="iqlearn",
                   help="sft: TRL's own SFTTrainer on the same data, the baseline (takes no --lambda, --gamma, "
                        "--value_head)")
    add_loss_flags(p)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=8, help="per process and micro-batch")
    p.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--padding_free", action="store_true", help="one row per micro-batch, position ids restarting")
    p.add_argument("--output_dir", default="out_trl", help="where the trained model and tokenizer are saved")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    check_flags(p, args, ["steps", "batch_size", "grad_accum"])
    if args.trainer == "sft" and args.value_head:
        p.error("--value_head is IQLearn's; --trainer sft trains TRL's own loss")
    return args


def context(tokenizer, model) -> int:
    """The longest sequence to train on: the model's positions, or the tokenizer's limit if lower."""
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None) or tokenizer.model_max_length
    return min(positions, tokenizer.model_max_length)


class StepPrinter(TrainerCallback):
    """One line per logged step; the wall and CPU time of each optimizer step (medians at the end)."""

    def __init__(self):
        self.wall, self.cpu, self.start = [], [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self.start[0])
        self.cpu.append(time.process_time() - self.start[1])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and "loss" in logs:
            extra = "".join(f", {k} {logs[k]:.4f}" for k in ("nll", "td") if k in logs)
            print(f"step {state.global_step}: loss {logs['loss']:.4f}{extra}")

    def summary(self) -> str:
        first = 1 if len(self.wall) > 1 else 0  # the first step warms up
        wall, cpu = (1000 * statistics.median(t[first:]) for t in (self.wall, self.cpu))
        return f"time per step: median {wall:.1f} ms wall, {cpu:.1f} ms CPU over steps {first + 1}-{len(self.wall)}"


def main(argv: list[str] | None = None) -> int:
    return run_main("trl_iqlearn.py", lambda: fine_tune(parse_args(argv)))


def fine_tune(args: argparse.Namespace) -> int:
    datasets.disable_progress_bars()  # one bar per pass of TRL's data preparation, and one per model load
    transformers.utils.logging.disable_progress_bar()
    tokenizer, model = load(args.model)
    records = pairs(args.data)
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in records])
    common = dict(output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                  gradient_accumulation_steps=args.grad_accum, learning_rate=args.learning_rate,
                  lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                  disable_tqdm=True, seed=args.seed, padding_free=args.padding_free,
                  bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # TRL's default: bf16 on
                  gradient_checkpointing=False,  # TRL's default recomputes activations: for large models
                  dataloader_pin_memory=torch.cuda.is_available(),
                  max_length=None if args.padding_free else context(tokenizer, model))
    try:
        if args.trainer == "sft":
            trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset,
                                 processing_class=tokenizer)
        else:
            config = IQLearnConfig(**common, lam=args.lam, gamma=args.gamma, value_head=args.value_head)
            trainer = IQLearnTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    except ValueError as e:  # a setting TRL or IQLearnTrainer refuses: its message, on one line
        raise UserError(" ".join(str(e).split())) from None
    if trainer.accelerator.is_main_process:
        rows = trainer.train_dataset["input_ids"]
        cut = sum(1 for ids in rows if ids[-1] != tokenizer.eos_token_id)
        loss = "SFTTrainer's own" if args.trainer == "sft" else \
            f"IQLearn, lambda {args.lam}, gamma {args.gamma}, value head {args.value_head}"
        print(f"{len(rows)} examples ({cut} cut at {common['max_length']} tokens before their end-of-text), {loss}, "
              f"batch {args.batch_size} x {args.grad_accum} micro-batches x {trainer.accelerator.num_processes} "
              "processes")
    trainer.remove_callback(PrinterCallback)
    printer = StepPrinter()
    trainer.add_callback(printer)
    trainer.train()
    trainer.save_model(args.output_dir)  # model (its weights, config) and tokenizer: from_pretrained loads it
    if trainer.accelerator.is_main_process:
        print(f"{printer.summary()}; saved {args.output_dir}")
    # Every process here before run_main takes the process group down: once in the whole suite, a
    # process that ended while the other was still in its last collective aborted it (gloo).
    trainer.accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
