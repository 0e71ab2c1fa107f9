"""IQLearn in TRL (examples/trl_iqlearn.py): IQLearnTrainer against TRL's own SFTTrainer at lam = 0,
against our iqlearn_loss on our model with the same weights at lam > 0, against a slow loop for the
terminal, and against itself in one batch for gradient accumulation, padding-free and packed rows,
and two processes. Each runs one optimizer step of the real Trainer loop on a random 2-layer
GPT2LMHeadModel with GPT-2's tokenizer, on 8 problems of the built-in task. Skipped with the reason
when the optional trl, accelerate or datasets is missing (CI installs them)."""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import save_random_gpt2
from data import IGNORE, Item, collate
from gpt2 import gpt2_checkpoint
from iqlearn import iqlearn_loss
from runfiles import model_from_checkpoint

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
datasets = pytest.importorskip("datasets")
pytest.importorskip("trl")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS = 50256  # GPT-2's end-of-text; GPT-2 has no pad token, so TRL pads with it
IGNORE_HF = -100


def load_example():
    spec = importlib.util.spec_from_file_location("trl_iqlearn", os.path.join(ROOT, "examples", "trl_iqlearn.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the trainer pickles its IQLearnConfig (training_args.bin) by module name
    spec.loader.exec_module(module)
    return module


trl_iqlearn = load_example()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random 2-layer GPT-2 (biases and LayerNorms perturbed) with GPT-2's tokenizer, as a folder."""
    from export import ExportError, tokenizer_files
    try:
        files = tokenizer_files(128)
    except ExportError as e:
        pytest.skip(str(e))
    path = tmp_path_factory.mktemp("gpt2")
    save_random_gpt2(path, n_positions=128)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return str(path)


def problems(n: int = 8) -> "datasets.Dataset":
    """n problems of the built-in task in TRL's prompt-completion format (45 to 69 tokens with EOS)."""
    records = trl_iqlearn.pairs(None)[:n]
    return datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in records])


class Grads(transformers.TrainerCallback):
    """The gradient of the step, as the optimizer would take it (no clipping: max_grad_norm=0)."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# The reference step: lam 0.5, gamma 0.9, a value head, max_length 60 (which cuts 2 of the 8 rows
# before their end-of-text), one batch of 8 on one process.
REFERENCE = dict(lam=0.5, gamma=0.9, value_head=True, max_length=60)


def make(folder: str, tmp_path, trainer: str = "iqlearn", dataset=None, chat_template=None, **options):
    """A trainer for one optimizer step over 8 problems, 1 x 8 unless options say otherwise. A value
    head gets fixed random weights, as if it had trained (zeros would hide a head left out)."""
    config = dict(output_dir=str(tmp_path / trainer), max_steps=1, per_device_train_batch_size=8,
                  logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, bf16=False,
                  gradient_checkpointing=False, max_grad_norm=0.0, dataloader_pin_memory=False, seed=0)
    config.update(options)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = chat_template
    model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    dataset = problems() if dataset is None else dataset
    if trainer == "sft":
        return trl_iqlearn.SFTTrainer(model=model, args=trl_iqlearn.SFTConfig(**config), train_dataset=dataset,
                                      processing_class=tokenizer)
    made = trl_iqlearn.IQLearnTrainer(model=model, args=trl_iqlearn.IQLearnConfig(**config),
                                      train_dataset=dataset, processing_class=tokenizer)
    if made.value_head is not None:
        with torch.no_grad():
            made.value_head.v.weight.copy_(head_weight(model.config.n_embd))
            made.value_head.v.bias.fill_(3.0)
    return made


def head_weight(n_embd: int) -> torch.Tensor:
    """The fixed random weight of the trainers' value heads (bias 3): [1, n_embd]."""
    return 0.5 * torch.randn(1, n_embd, generator=torch.Generator().manual_seed(3))


def step(trainer) -> tuple[dict, dict[str, torch.Tensor]]:
    """One optimizer step: its log (loss, and nll/td for IQLearn) and its gradient."""
    grads = Grads()
    trainer.add_callback(grads)
    trainer.train()
    return trainer.state.log_history[0], grads.grads


def assert_same_step(a, b, rtol=1e-5, atol=1e-7, keys=("loss", "nll", "td")):
    (log_a, grads_a), (log_b, grads_b) = a, b
    for key in keys:
        assert log_a[key] == pytest.approx(log_b[key], rel=rtol), key
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """The reference trainer and its step."""
    trainer = make(folder, tmp_path_factory.mktemp("reference"), **REFERENCE)
    return trainer, step(trainer)


@pytest.fixture(scope="module")
def uncut_items(folder, tmp_path_factory) -> list[Item]:
    """The 8 problems as TRL tokenizes them without max_length, as our Items (one per row)."""
    return items_of(make(folder, tmp_path_factory.mktemp("uncut"), **{**REFERENCE, "max_length": None}).train_dataset)


def items_of(dataset) -> list[Item]:
    """TRL's tokenized rows as our data.py Items: the prompt is where the labels start, terminal when
    the row ends in EOS (collate builds targets and done from these, independently of the trainer)."""
    return [Item(np.array(ids), next(i for i, label in enumerate(labels) if label != IGNORE_HF), ids[-1] == EOS)
            for ids, labels in zip(dataset["input_ids"], dataset["labels"])]


def our_step(folder: str, items: list[Item]) -> tuple[dict, dict[str, torch.Tensor]]:
    """iqlearn_loss on our model (GPT-2's weights by --init_from's code path, the trainers' value head)
    over one padded batch from data.collate: its loss, nll, td and a few gradients under Hugging Face's names."""
    ours = model_from_checkpoint(gpt2_checkpoint(folder, value_head=True))
    with torch.no_grad():
        ours.value_head.weight.copy_(head_weight(ours.config.n_embd))
        ours.value_head.bias.fill_(3.0)
    x, y, done = (torch.from_numpy(a) for a in collate(items, with_last_state=True))
    loss, stats = iqlearn_loss(ours(x), y, lam=0.5, gamma=0.9, done=done, ignore_index=IGNORE)
    loss.backward()
    g = {n: p.grad for n, p in ours.named_parameters()}
    grads = {"transformer.wte.weight": g["wte.weight"], "transformer.ln_f.bias": g["ln_f.bias"],
             "transformer.h.1.mlp.c_fc.weight": g["blocks.1.mlp.c_fc.weight"].t(),  # Conv1D: [in, out]
             "transformer.h.0.attn.c_attn.bias": g["blocks.0.attn.c_attn.bias"],
             "iqlearn_value_head.v.weight": g["value_head.weight"]}
    return {"loss": loss.item(), "nll": stats["nll"].item(), "td": stats["td"].item()}, grads


def assert_matches_ours(step_result, ours):
    (log, grads), (our_log, our_grads) = step_result, ours
    for key in ("loss", "nll", "td"):
        assert log[key] == pytest.approx(our_log[key], rel=1e-5), key
    for name, g in our_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_at_lambda_zero_it_is_sfttrainers_own_loss_and_gradient(folder, tmp_path):
    theirs = step(make(folder, tmp_path, "sft", max_length=60))  # TRL's own loss: its fused LM head
    log, grads = step(make(folder, tmp_path, **{**REFERENCE, "lam": 0.0}))
    head = {n: g for n, g in grads.items() if n.startswith("iqlearn_value_head.")}
    assert_same_step(theirs, (log, {n: g for n, g in grads.items() if n not in head}), keys=("loss",))
    assert log["loss"] == pytest.approx(log["nll"], rel=1e-6) and log["td"] > 0  # computed, weighted by zero
    assert len(head) == 2 and all(float(g.abs().max()) < 1e-6 for g in head.values())  # softmax ignores v


def test_at_lambda_above_zero_it_is_our_loss_on_our_model_with_the_same_weights(folder, reference):
    trainer, step_result = reference
    items = items_of(trainer.train_dataset)
    assert sum(not it.terminal for it in items) == 2  # the two rows cut at 60 tokens: not terminal, in td
    assert_matches_ours(step_result, our_step(folder, items))
    assert float(step_result[1]["iqlearn_value_head.v.weight"].abs().max()) > 0  # at lam > 0 the head learns


def slow_td(logits: torch.Tensor, labels: torch.Tensor, gamma: float, eos_terminal: bool) -> float:
    """The mean of r_t^2 = (Q(s_t, a_t) - gamma V(s_t+1))^2 over the actions, one transition at a time."""
    v = torch.logsumexp(logits.double(), -1).tolist()  # V(s_t) = logsumexp Q(s_t, .) at each position
    total, count = 0.0, 0
    for b, row in enumerate(labels.tolist()):
        for t, action in enumerate(row[1:]):  # the action taken in s_t is token t + 1
            if action == IGNORE_HF:
                continue
            v_next = 0.0 if eos_terminal and action == EOS else v[b][t + 1]
            total += (float(logits[b, t, action]) - gamma * v_next) ** 2
            count += 1
    return total / count


def eval_td_and_logits(trainer, batch) -> tuple[float, torch.Tensor]:
    """The trainer's own td on one batch in eval mode (its logged sums), and the model's logits there."""
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(trainer._stat_sums["eval"][1] / trainer._stat_sums["eval"][-1]), logits


def test_the_end_of_text_trl_appends_is_terminal_and_padding_with_it_keeps_it(folder, tmp_path):
    trainer = make(folder, tmp_path, lam=0.5, gamma=0.9)
    assert trainer.processing_class.pad_token_id == EOS  # GPT-2 has no pad token: TRL pads with end-of-text
    rows = trainer.train_dataset
    assert all(ids[-1] == EOS and labels[-1] == EOS for ids, labels in zip(rows["input_ids"], rows["labels"]))
    batch = trainer.data_collator([rows[i] for i in range(len(rows))])
    assert (batch["input_ids"] == EOS).sum() > len(rows)  # padding is EOS too ...
    assert (batch["labels"] == EOS).sum() == len(rows)    # ... but each real EOS keeps its label

    td, logits = eval_td_and_logits(trainer, batch)
    assert td == pytest.approx(slow_td(logits, batch["labels"], 0.9, eos_terminal=True), rel=1e-5)
    # reading V after EOS from the logits at the EOS token (padding follows) would give another td
    assert abs(td - slow_td(logits, batch["labels"], 0.9, eos_terminal=False)) > 0.01 * td


# A chat template whose assistant turns end with end-of-text, as an instruction model's end with its stop token
CHAT = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}"
        "{% else %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def test_conversations_train_on_the_assistant_turn_its_stop_token_terminal(folder, tmp_path):
    records = trl_iqlearn.pairs(None)[:8]
    chats = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"].strip()}],
                                         "completion": [{"role": "assistant", "content": r["response"]}]}
                                        for r in records])
    trainer = make(folder, tmp_path, dataset=chats, chat_template=CHAT, lam=0.5, gamma=0.9)
    rows = trainer.train_dataset
    text = trainer.processing_class.decode([t for t in rows[0]["labels"] if t != IGNORE_HF])
    assert text == " " + records[0]["response"] + "<|endoftext|>"  # the turn, not the prompt, with its stop
    batch = trainer.data_collator([rows[i] for i in range(len(rows))])
    assert (batch["labels"] == EOS).sum() == len(rows)
    td, logits = eval_td_and_logits(trainer, batch)
    assert td == pytest.approx(slow_td(logits, batch["labels"], 0.9, eos_terminal=True), rel=1e-5)


def test_two_micro_batches_of_4_are_one_batch_of_8_for_nll_and_td(folder, tmp_path, reference):
    trainer = make(folder, tmp_path, **REFERENCE, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    counts = []
    compute_loss = trainer.compute_loss

    def counting(model, inputs, **kwargs):
        counts.append(int((inputs["labels"][:, 1:] != IGNORE_HF).sum()))
        return compute_loss(model, inputs, **kwargs)

    trainer.compute_loss = counting
    two = step(trainer)
    assert len(counts) == 2 and counts[0] != counts[1]  # so a mean of the micro-batches' means would be off
    assert_same_step(reference[1], two)


@pytest.mark.parametrize("options", [dict(padding_free=True), dict(packing=True, max_length=128)],
                         ids=["padding_free", "packing"])
def test_sequences_sharing_a_row_train_as_the_padded_batch(folder, tmp_path, uncut_items, options):
    trainer = make(folder, tmp_path, **{**REFERENCE, "max_length": None, **options})
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].size(0) == 1 and (batch["position_ids"] == 0).sum() == 8  # 8 sequences, one row
    assert_matches_ours(step(trainer), our_step(folder, uncut_items))


TWO_PROCESSES = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import test_trl
trainer = test_trl.make({folder!r}, Path({out!r}), **test_trl.REFERENCE, per_device_train_batch_size=4)
log, grads = test_trl.step(trainer)
if trainer.accelerator.is_main_process:
    torch.save((trainer.accelerator.num_processes, log, grads), {out!r} + "/step.pt")
"""


@pytest.mark.slow  # two fresh interpreters importing torch, transformers and TRL: ~16 s of CPU
def test_two_processes_of_4_are_one_process_of_8(folder, tmp_path, reference):
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES.format(root=ROOT, tests=os.path.join(ROOT, "tests"), folder=folder,
                                           out=str(tmp_path)))
    # gloo on CPU: accelerate's multi-process launcher (torchrun) with ACCELERATE_USE_CPU; --cpu alone runs one
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    with socket.socket() as free:  # a free port, so that runs beside ours do not collide on torchrun's default
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no",
                          "--dynamo_backend", "no", str(script)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    processes, log, grads = torch.load(tmp_path / "step.pt")
    assert processes == 2
    assert_same_step(reference[1], (log, grads))


def test_twenty_steps_lower_the_loss_and_save_a_model_from_pretrained_loads(folder, tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in trl_iqlearn.pairs(None)[:8]))
    assert trl_iqlearn.main(["--model", folder, "--data", str(data), "--steps", "20", "--batch_size", "1",
                             "--learning_rate", "3e-3",
                             "--lambda", "0.1", "--gamma", "0.9", "--value_head", "--output_dir", str(out)]) == 0
    losses = [float(m) for m in re.findall(r"^step \d+: loss ([\d.]+)", capsys.readouterr().out, re.M)]
    assert len(losses) == 20 and sum(losses[-5:]) < 0.9 * sum(losses[:5])
    trained = transformers.GPT2LMHeadModel.from_pretrained(out).eval()  # drops the value head: no probability changes
    start = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert not torch.equal(trained.transformer.h[0].mlp.c_fc.weight, start.transformer.h[0].mlp.c_fc.weight)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token_id == EOS
    # what train.py --init_from reads: our model, with the head that trained, and the same policy
    ours = model_from_checkpoint(gpt2_checkpoint(str(out))).eval()
    ids = torch.tensor([tokenizer(data.read_text().splitlines()[0])["input_ids"][:40]])
    with torch.no_grad():
        assert ours.config.value_head and float(ours.value_head.weight.abs().max()) > 0
        torch.testing.assert_close(ours(ids).log_softmax(-1), trained(ids).logits.log_softmax(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("argv,message", [
    (["--lambda", "-1"], "lam must be a finite number >= 0"),
    (["--trainer", "sft", "--value_head"], "--value_head is IQLearn's"),
    (["--steps", "0"], "--steps, --batch_size and --grad_accum must be >= 1")])
def test_the_examples_bad_flags_are_one_line(folder, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        trl_iqlearn.main(["--model", folder, *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_another_loss_is_refused_in_one_line(folder, tmp_path):
    with pytest.raises(ValueError, match="IQLearnTrainer computes its own loss") as refused:
        make(folder, tmp_path, loss_type="dft")
    assert "\n" not in str(refused.value)
