"""train.py end to end on tiny configurations: learning, exact resume, DDP, and bad input."""

import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import train
from data import Batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "4", "--eval_iters", "1", "--warmup_iters", "2"]


def run(tmp_path, *args, out="out"):
    return train.main([*TINY, "--out_dir", str(tmp_path / out), *map(str, args)])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_loss_goes_down_and_log_is_written(tmp_path):
    assert run(tmp_path, "--max_iters", 40, "--eval_interval", 10, "--learning_rate", 1e-2, "--min_lr", 1e-3) == 0
    log = [json.loads(line) for line in open(tmp_path / "out" / "log.jsonl")]
    assert [e["iter"] for e in log] == [10, 20, 30, 40]
    assert log[-1]["val_nll"] < log[0]["val_nll"] - 0.3
    assert {"val_nll", "val_td", "val_entropy", "accuracy", "lr"} <= log[0].keys()
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 40 and ckpt["config"]["lam"] == 0.5
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])


def test_resume_continues_exactly(tmp_path):
    common = ["--dropout", "0.1", "--eval_interval", "100"]
    assert run(tmp_path, *common, "--max_iters", 6, out="straight") == 0
    assert run(tmp_path, *common, "--max_iters", 3, "--lr_decay_iters", 6, out="resumed") == 0
    assert train.main(["--resume", "--max_iters", "6", "--out_dir", str(tmp_path / "resumed")]) == 0
    assert_same_weights(tmp_path / "straight" / "ckpt.pt", tmp_path / "resumed" / "ckpt.pt")


def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    assert run(tmp_path, "--max_iters", 6, "--eval_interval", 100, out="straight") == 0
    real_next, calls = Batches.next, []

    def next_then_interrupt(self):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_next(self)

    monkeypatch.setattr(Batches, "next", next_then_interrupt)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert run(tmp_path, "--max_iters", 6, "--eval_interval", 100, out="stopped") == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(Batches, "next", real_next)
    assert torch.load(tmp_path / "stopped" / "ckpt.pt", weights_only=True)["iter_num"] == 3
    assert train.main(["--resume", "--out_dir", str(tmp_path / "stopped")]) == 0
    assert_same_weights(tmp_path / "straight" / "ckpt.pt", tmp_path / "stopped" / "ckpt.pt")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    assert run(tmp_path, "--max_iters", 2, "--eval_interval", 100) == 0
    before = (tmp_path / "out" / "ckpt.pt").read_bytes()
    real_loss = train.training_loss

    def nan_loss(*args):
        loss, stats, n_tokens = real_loss(*args)
        return loss * float("nan"), stats, n_tokens

    monkeypatch.setattr(train, "training_loss", nan_loss)
    assert train.main(["--resume", "--max_iters", "4", "--out_dir", str(tmp_path / "out")]) == 1
    assert "not finite" in capsys.readouterr().err
    assert (tmp_path / "out" / "ckpt.pt").read_bytes() == before


def test_init_from_starts_from_weights_with_a_fresh_optimizer(tmp_path):
    assert run(tmp_path, "--max_iters", 2, "--lambda", 0, "--eval_interval", 100, out="mle") == 0
    source = str(tmp_path / "mle" / "ckpt.pt")
    assert run(tmp_path, "--max_iters", 2, "--init_from", source, "--eval_interval", 100, out="ft") == 0
    ckpt = torch.load(tmp_path / "ft" / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 2 and ckpt["config"]["lam"] == 0.5
    assert ckpt["vocab"] == torch.load(source, weights_only=True)["vocab"]
    assert run(tmp_path, "--init_from", source, "--n_layer", 2, out="bad") == 2


def test_entropy_cost_is_logged_and_changes_training(tmp_path):
    assert run(tmp_path, "--max_iters", 3, "--eval_interval", 100, "--lambda", 0, out="plain") == 0
    assert run(tmp_path, "--max_iters", 3, "--eval_interval", 100, "--lambda", 0, "--entropy_coef", 1, out="ent") == 0
    a, b = weights(tmp_path / "plain" / "ckpt.pt"), weights(tmp_path / "ent" / "ckpt.pt")
    assert not torch.equal(a["wte.weight"], b["wte.weight"])


def test_two_process_ddp_on_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), *TINY, "--max_iters", "3", "--eval_interval", "100",
           "--out_dir", str(tmp_path / "ddp")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)["iter_num"] == 3
    assert len(open(tmp_path / "ddp" / "log.jsonl").readlines()) == 1  # only rank 0 logs


# --- online IQLearn ------------------------------------------------------------------------------

def test_online_training_runs_logs_sampling_time_and_resumes_exactly(tmp_path):
    online = ["--mixin", "0.1", "--sample_every", "2", "--eval_interval", "100"]
    assert run(tmp_path, *online, "--max_iters", 5, out="straight") == 0
    log = json.loads(open(tmp_path / "straight" / "log.jsonl").readline())
    assert log["sample_ms"] > 0 and log["update_ms"] > 0
    assert run(tmp_path, *online, "--max_iters", 3, "--lr_decay_iters", 5, out="resumed") == 0
    assert train.main(["--resume", "--max_iters", "5", "--out_dir", str(tmp_path / "resumed")]) == 0
    assert_same_weights(tmp_path / "straight" / "ckpt.pt", tmp_path / "resumed" / "ckpt.pt")
    assert run(tmp_path, "--max_iters", 5, "--eval_interval", 100, out="offline") == 0
    offline, online_w = weights(tmp_path / "offline" / "ckpt.pt"), weights(tmp_path / "straight" / "ckpt.pt")
    assert not torch.equal(offline["wte.weight"], online_w["wte.weight"])


# --- bad input: one line on stderr, exit code 2, no traceback, the checkpoint untouched ----------

@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("existing")
    assert train.main([*TINY, "--max_iters", "1", "--out_dir", str(out / "out")]) == 0
    return out


def _bad_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "malformed.jsonl").write_text('{"prompt": "a", "response": "b"}\n{oops\n')
    (tmp_path / "fields.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')


@pytest.mark.parametrize("args,message", [
    (["--data", "{tmp}/missing.jsonl"], "not found"),
    (["--data", "{tmp}/empty.jsonl"], "empty"),
    (["--data", "{tmp}/malformed.jsonl"], "malformed.jsonl:2: not valid JSON"),
    (["--data", "{tmp}/fields.jsonl"], "fields.jsonl:1: expected"),
    (["--lambda", "-0.5"], "--lambda"),
    (["--lambda", "nan"], "--lambda"),
    (["--gamma", "1.5"], "--gamma"),
    (["--n_embd", "30", "--n_head", "4"], "divisible"),
    (["--max_iters", "0"], "--max_iters"),
    (["--mixin", "1.5"], "--mixin"),
    (["--mixin", "-0.1"], "--mixin"),
    (["--sample_every", "0"], "--sample_every"),
    (["--device", "nonsense"], "--device"),
    (["--lambda", "abc"], "invalid float"),
    (["--resume", "--out_dir", "{tmp}/nothing_here"], "no checkpoint"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    _bad_files(tmp_path)
    try:
        code = train.main([*TINY, "--out_dir", str(tmp_path / "out"), *(a.format(tmp=tmp_path) for a in args)])
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "ckpt.pt").exists()


def _without_optimizer(good: bytes) -> bytes:
    buffer = io.BytesIO(good)
    checkpoint = torch.load(buffer, weights_only=True)
    del checkpoint["optimizer"]
    out = io.BytesIO()
    torch.save(checkpoint, out)
    return out.getvalue()


@pytest.mark.parametrize("damage,args,message", [
    ("random", ["--resume"], "not a readable checkpoint"),
    ("no_optimizer", ["--resume"], "cannot be resumed (it has no optimizer)"),
    ("truncate", ["--resume"], "not a readable checkpoint"),
    (None, ["--resume", "--n_layer", "3"], "does not fit"),
    (None, ["--resume", "--task_steps", "4"], "does not fit"),
    (None, [], "exists"),
    (None, ["--resume", "--data", "{tmp}/missing.jsonl"], "does not fit"),
])
def test_bad_checkpoint_or_config_leaves_the_checkpoint_alone(existing_run, tmp_path, capsys, damage, args, message):
    out = tmp_path / "out"
    out.mkdir()
    good = (existing_run / "out" / "ckpt.pt").read_bytes()
    content = {"random": lambda: os.urandom(5000), "truncate": lambda: good[:len(good) // 2],
               "no_optimizer": lambda: _without_optimizer(good), None: lambda: good}[damage]()
    (out / "ckpt.pt").write_bytes(content)
    code = train.main([*TINY, "--out_dir", str(out), *(a.format(tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (out / "ckpt.pt").read_bytes() == content
    assert sorted(os.listdir(out)) == ["ckpt.pt"]


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    c = train.TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110, lr_decay_iters=None)
    lrs = [train.lr_at(it, c) for it in range(200)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[110] == lrs[199] == 0.1
    assert abs(lrs[60] - 0.55) < 1e-9  # half-way down the cosine


def test_value_head_travels_in_the_checkpoint_and_can_be_added_by_init_from(tmp_path, capsys):
    import sample
    assert run(tmp_path, "--max_iters", 2, "--lambda", 0, "--eval_interval", 100, out="mle") == 0
    source = str(tmp_path / "mle" / "ckpt.pt")
    assert run(tmp_path, "--max_iters", 2, "--init_from", source, "--value_head", "--eval_interval", 100,
               "--lr_decay_iters", 4, out="ft") == 0
    ckpt = torch.load(tmp_path / "ft" / "ckpt.pt", weights_only=True)
    assert ckpt["model_args"]["value_head"] and "value_head.weight" in ckpt["model"]
    assert ckpt["model"]["value_head.bias"].abs().item() > 0  # lambda 0.5 trained it
    for k, v in weights(source).items():  # everything else came from the source, then trained
        assert v.shape == ckpt["model"][k].shape
    assert train.main(["--resume", "--max_iters", "4", "--out_dir", str(tmp_path / "ft")]) == 0
    resumed = torch.load(tmp_path / "ft" / "ckpt.pt", weights_only=True)
    assert resumed["iter_num"] == 4 and resumed["model_args"]["value_head"]
    assert not torch.equal(resumed["model"]["value_head.bias"], ckpt["model"]["value_head.bias"])
    capsys.readouterr()
    assert sample.main(["--out_dir", str(tmp_path / "ft"), "--eval", "--json", "--num_problems", "2",
                        "--num_samples", "2", "--max_new_tokens", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["num_problems"] == 2


def test_loss_assembly_entropy_cost_raises_the_policy_entropy(tmp_path):
    """--entropy_coef subtracts the entropy from the loss: training with a large one leaves a
    flatter policy than plain MLE from the same start (a sign slip would sharpen it instead)."""
    common = ["--max_iters", 4, "--eval_interval", 4, "--lambda", 0, "--learning_rate", 1e-2, "--min_lr", 1e-3,
              "--eval_problems", 0]
    assert run(tmp_path, *common, out="plain") == 0
    assert run(tmp_path, *common, "--entropy_coef", 5, out="flat") == 0
    plain, flat = (json.loads(open(tmp_path / o / "log.jsonl").readline()) for o in ("plain", "flat"))
    assert flat["val_entropy"] > plain["val_entropy"] + 0.05  # measured: 5.66 vs 5.57


def test_lr_schedule_follows_its_own_flags():
    # warm-up over 4 iterations, then a cosine from 1.0 to 0.2 over iterations 4..24 (lr_decay_iters,
    # not max_iters), then flat at min_lr
    c = train.TrainConfig(learning_rate=1.0, min_lr=0.2, warmup_iters=4, max_iters=1000, lr_decay_iters=24)
    expected = {0: 0.25, 3: 1.0, 4: 1.0, 14: 0.2 + 0.5 * 0.8, 24: 0.2, 500: 0.2}
    assert {it: train.lr_at(it, c) for it in expected} == pytest.approx(expected)


def test_the_flags_set_the_learning_rate_the_optimizer_uses(tmp_path):
    # --warmup_iters 2 (TINY), --lr_decay_iters 4 of --max_iters 6: iteration 3 is half-way down the
    # cosine from 2e-3 to 2e-4; iteration 5 (the last step) is at --min_lr
    assert run(tmp_path, "--max_iters", 6, "--lr_decay_iters", 4, "--eval_interval", 2, "--eval_problems", 0,
               "--learning_rate", 2e-3, "--min_lr", 2e-4) == 0
    log = [json.loads(line) for line in open(tmp_path / "out" / "log.jsonl")]
    assert [e["lr"] for e in log] == pytest.approx([2e-3, 2e-4 + 0.5 * 1.8e-3, 2e-4])
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == pytest.approx([2e-4, 2e-4])


def hand_td_terms(logits, items, eos, gamma):
    """For each row, slowly: the per-token -log pi over its actions, and the implicit rewards
    r_t = Q(s_t, a_t) - gamma V(s_t+1) where V(s_t+1) is 0 after the closing EOS of a terminal row and
    the value of the next position otherwise; a non-terminal row's last action has no next state here."""
    nlls, rewards, values = [], [], []
    for b, item in enumerate(items):
        tokens = item.tokens.tolist()
        for t in range(item.n_prompt - 1, len(tokens) - 1):
            a, row = tokens[t + 1], logits[b, t].double()
            v = torch.logsumexp(row, 0)
            nlls.append(float(v - row[a]))
            if t + 1 == len(tokens) - 1 and not item.terminal:
                continue  # a cut row: its last action counts in nll only
            terminal = item.terminal and t + 1 == len(tokens) - 1 and a == eos
            v_next = 0.0 if terminal else float(torch.logsumexp(logits[b, t + 1].double(), 0))
            rewards.append(float(row[a]) - gamma * v_next)
            values.append(float(v) - gamma * v_next)
    return nlls, rewards, values


def test_training_loss_treats_the_closing_eos_as_terminal_offline_and_online():
    import dataclasses

    import numpy as np

    from data import Item, collate, load_dataset
    from model import GPT, GPTConfig
    from task import TaskConfig
    spec = {"data": None, "val_data": None, "full_vocab": False,
            "task": dataclasses.asdict(TaskConfig(n_train=20, n_val=5, n_test=5))}
    dataset = load_dataset(spec, 96)
    eos = dataset.vocab.eos
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dataset.vocab.size, block_size=96, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():  # values far from 0, so that a V(s_T) left in after EOS changes the loss
        model.lm_head.weight.mul_(30)
    expert = dataset.train[:3]
    cut = Item(expert[0].tokens[:-3].copy(), expert[0].n_prompt, False)  # a policy sample cut before EOS
    policy = [Item(np.array(expert[1].tokens), expert[1].n_prompt, True), cut]
    x = torch.from_numpy(collate(expert + policy)[0])
    with torch.no_grad():
        logits = model(x)
    c = train.TrainConfig(lam=0.7, gamma=0.9)
    loss, _, _ = train.training_loss(model, expert, None, c, "cpu", torch.float32)
    nll, r, _ = hand_td_terms(logits[:3], expert, eos, 0.9)
    mean = lambda xs: sum(xs) / len(xs)
    assert loss.item() == pytest.approx(mean(nll) + 0.7 * mean([x * x for x in r]), rel=1e-5)
    c = dataclasses.replace(c, mixin=0.25)
    loss, _, _ = train.training_loss(model, expert, policy, c, "cpu", torch.float32)
    _, r_e, gap_e = hand_td_terms(logits[:3], expert, eos, 0.9)
    _, r_p, gap_p = hand_td_terms(logits[3:], policy, eos, 0.9)
    expected = (mean(nll) - 0.25 * (mean(gap_e) - mean(gap_p))
                + 0.7 * (0.75 * mean([x * x for x in r_e]) + 0.25 * mean([x * x for x in r_p])))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_value_head_stays_put_where_nothing_trains_it(tmp_path):
    # at lambda 0 (offline) the head's gradient is rounding noise; AdamW must not turn it into steps
    assert run(tmp_path, "--max_iters", 15, "--eval_interval", 100, "--lambda", 0, "--value_head",
               "--eval_problems", 0, out="mle") == 0
    head = {k: v for k, v in weights(tmp_path / "mle" / "ckpt.pt").items() if k.startswith("value_head.")}
    assert head and all(torch.count_nonzero(v) == 0 for v in head.values())
    assert run(tmp_path, "--max_iters", 2, "--eval_interval", 100, "--lambda", 0.5, "--value_head",
               "--eval_problems", 0, out="iq") == 0
    assert weights(tmp_path / "iq" / "ckpt.pt")["value_head.bias"].abs().item() > 0


def test_val_metrics_average_the_first_val_batches_and_hand_the_model_back_in_training_mode():
    # eval_iters batches of batch_size val examples, in order, wrapping around the val set
    import dataclasses

    from data import collate, load_dataset
    from iqlearn import iqlearn_loss
    from model import GPT, GPTConfig
    from task import TaskConfig
    spec = {"data": None, "val_data": None, "full_vocab": False,
            "task": dataclasses.asdict(TaskConfig(n_train=20, n_val=5, n_test=5))}
    dataset = load_dataset(spec, 96)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dataset.vocab.size, block_size=96, n_layer=1, n_head=2, n_embd=32, dropout=0.5))
    c = train.TrainConfig(batch_size=2, eval_iters=4, lam=0.5)
    metrics = train.val_metrics(model.train(), dataset, [], c, "cpu", torch.float32)
    assert model.training
    model.eval()
    expected = []
    for i in range(4):  # val items 0-1, 2-3, 4-0, 1-2 of the five
        x, y, done = (torch.from_numpy(a) for a in collate([dataset.val[(2 * i + j) % 5] for j in range(2)]))
        with torch.no_grad():
            expected.append(iqlearn_loss(model(x), y, lam=0.5, done=done)[1]["nll"].item())
    assert metrics["val_nll"] == pytest.approx(sum(expected) / 4, rel=1e-6)
    assert "accuracy" not in metrics  # no problems given


def test_batch_chunks_give_the_gradient_and_statistics_of_one_padded_pass(tmp_path):
    """--batch_chunks computes a batch as passes over rows of similar length; the gradient and the
    logged nll and td must be those of the whole batch's mean loss in one pass."""
    import dataclasses
    c = train.TrainConfig(lam=0.5, gamma=0.9, entropy_coef=0.05, value_head=True, n_layer=1, n_head=2, n_embd=32,
                          block_size=96, task_train=64, eval_problems=0, batch_size=12, out_dir=str(tmp_path))
    run, _ = train.setup(c, None, None, 0, 1, "cpu")
    expert = run.batches.next()
    assert len({len(it.tokens) for it in expert}) > 4       # lengths differ, so chunks pad less
    with torch.no_grad():                                   # a head far from 0: its gradient matters
        run.raw_model.value_head.weight.normal_()
    loss, stats, _ = train.training_loss(run.model, expert, None, c, "cpu", torch.float32)
    loss.backward()
    params = [p for p in run.raw_model.parameters() if p.grad is not None]
    reference = [p.grad.clone() for p in params]
    for k in (2, 5):
        run.optimizer.zero_grad(set_to_none=True)
        run.config = dataclasses.replace(c, batch_chunks=k)
        means, _ = train.accumulate_gradients(run, [expert], None)
        torch.testing.assert_close(means, torch.stack([loss, stats["nll"], stats["td"]]).detach())
        for p, g in zip(params, reference):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
