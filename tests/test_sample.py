"""sample.py: decoding (KV cache, greedy, beam search), teacher-forced rewards, --eval / --rewards
end to end on a tiny checkpoint, and bad input (the metrics themselves: test_metrics.py)."""

import json
import math

import pytest
import torch

import sample
import train
from data import Vocab
from model import GPTConfig, KVCache
from runfiles import load_checkpoint, model_from_checkpoint

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "4", "--eval_iters", "1", "--warmup_iters", "2"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    assert train.main([*TINY, "--max_iters", "12", "--learning_rate", "1e-2", "--min_lr", "1e-3",
                       "--eval_interval", "100", "--out_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(out_dir):
    checkpoint = load_checkpoint(str(out_dir / "ckpt.pt"))
    vocab = Vocab(checkpoint["vocab"]["gpt2_ids"])
    problems, checkable = sample.load_problems(checkpoint, vocab, "val", 4, 96)
    assert checkable and len(problems) == 4
    return model_from_checkpoint(checkpoint).eval(), vocab, problems


def run_main(argv, capsys):
    try:
        code = sample.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- decoding ------------------------------------------------------------------------------------

def test_beam_search_log_probs_on_the_kv_cache_match_a_full_forward(loaded):
    model, vocab, problems = loaded
    prompts = [p.prompt for p in problems]  # different lengths: left padding in the cached batch
    for prompt, (tokens, logp) in zip(prompts, sample.beam_search(model, prompts, 3, 30, vocab.eos)):
        full = sample.score(model, [prompt], [tokens], 1.0, vocab.eos)[0]
        assert logp == pytest.approx(sum(full.logp), abs=1e-3)


def test_beam_width_one_is_greedy(loaded):
    model, vocab, problems = loaded
    prompts = [p.prompt for p in problems]
    greedy = model.generate(prompts, 40, temperature=0, eos_id=vocab.eos)
    assert [tokens for tokens, _ in sample.beam_search(model, prompts, 1, 40, vocab.eos)] == greedy


class Bigram(torch.nn.Module):
    """A stand-in language model whose next-token distribution depends on the last token only."""

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).clamp(min=1e-6).log(), requires_grad=False)
        self.config = GPTConfig(vocab_size=len(probs), block_size=8, n_layer=0, n_head=1, n_embd=1)

    def new_cache(self, n_pad):
        return KVCache(0, self.config.block_size, n_pad)

    def forward(self, idx, cache, last_only=False):
        cache.length += idx.size(1)
        return self.table[idx[:, -1:] if last_only else idx]


def test_beam_search_finds_the_better_sequence_that_greedy_misses():
    EOS, A, B, PROMPT = 0, 1, 2, 3
    model = Bigram([[1, 0, 0, 0],          # after EOS (never asked: a finished beam stays put)
                    [.34, .33, .33, 0],    # after A: no clear way to end
                    [.98, .01, .01, 0],    # after B: end, almost surely
                    [0, .6, .4, 0]])       # after the prompt: A looks better than B
    (greedy, greedy_logp), = sample.beam_search(model, [[PROMPT]], 1, 5, EOS)
    (best, best_logp), = sample.beam_search(model, [[PROMPT]], 2, 5, EOS)
    assert greedy == [A, EOS] and greedy_logp == pytest.approx(math.log(.6 * .34), abs=1e-4)
    assert best == [B, EOS] and best_logp == pytest.approx(math.log(.4 * .98), abs=1e-4)


def test_return_telescopes_to_the_first_value_plus_log_likelihood(loaded):
    model, vocab, problems = loaded
    # gamma = 1: R = sum_t (Q(s_t,a_t) - V(s_t+1)) = V(s_0) + sum_t log pi(a_t|s_t), V = 0 after EOS
    for p, s in zip(problems, sample.score(model, [p.prompt for p in problems],
                                           [p.response for p in problems], 1.0, vocab.eos)):
        assert p.response[-1] == vocab.eos and len(s.reward) == len(p.response)
        assert sum(s.reward) == pytest.approx(s.value[0] + sum(s.logp), abs=1e-3)


# --- the command line --------------------------------------------------------------------------------

KEYS = {"accuracy_greedy", "accuracy_sample", "accuracy_beam", "self_bleu", "self_bleu_correct",
        "distinct_2", "nll", "reward_spearman"}


def test_eval_json_reports_every_measurement(out_dir, capsys):
    code, out, err = run_main(["--out_dir", out_dir, "--eval", "--json", "--num_problems", 4,
                               "--num_samples", 3, "--max_new_tokens", 30, "--beam", 2], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert KEYS <= metrics.keys() and metrics["num_problems"] == 4 and metrics["num_samples"] == 3
    for k in ("accuracy_greedy", "accuracy_sample", "accuracy_beam", "self_bleu", "distinct_2"):
        assert 0 <= metrics[k] <= 1, k
    assert metrics["self_bleu_correct"] is None or 0 <= metrics["self_bleu_correct"] <= 1
    assert metrics["reward_spearman"] is None or -1 <= metrics["reward_spearman"] <= 1
    assert 0 < metrics["nll"] < 10


def test_a_temperature_grid_gives_one_row_each_equal_to_single_calls(out_dir, loaded, capsys):
    common = ["--out_dir", out_dir, "--eval", "--json", "--num_problems", 4, "--num_samples", 3,
              "--max_new_tokens", 30, "--beam", 2]
    code, out, err = run_main(common + ["--temperature", "0,0.7,1.5"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["temperature"] for r in rows] == [0.0, 0.7, 1.5]
    for row in rows:
        code, out, err = run_main(common + ["--temperature", row["temperature"]], capsys)
        single = json.loads(out)
        assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in single.items() if k != "seconds"}
    greedy, warm, hot = rows
    # temperature 0 is greedy: each sample is the greedy answer, so its mean return is theirs
    model, vocab, problems = loaded
    prompts = [p.prompt for p in problems]
    answers = model.generate(prompts, 30, temperature=0, eos_id=vocab.eos)
    returns = [sum(s.reward) for s in sample.score(model, prompts, answers, 1.0, vocab.eos)]
    assert greedy["reward_mean"] == pytest.approx(sum(returns) / len(returns), abs=1e-4)
    assert warm["reward_mean"] != pytest.approx(greedy["reward_mean"], abs=1e-3)
    assert greedy["accuracy_sample"] == greedy["accuracy_greedy"]
    assert hot["self_bleu"] < warm["self_bleu"] < 1.0  # hotter samples differ more among themselves
    assert len({r["accuracy_beam"] for r in rows}) == len({r["nll"] for r in rows}) == 1


def test_samples_and_the_table(out_dir, capsys):
    code, out, err = run_main(["--out_dir", out_dir, "--num_samples", 2, "--max_new_tokens", 10], capsys)
    assert code == 0 and out.count("---------------") == 2 and "reference answer" in out, err
    code, out, err = run_main(["--out_dir", out_dir, "--eval", "--num_problems", 2, "--num_samples", 2,
                               "--max_new_tokens", 10], capsys)
    assert code == 0 and all(k in out for k in KEYS), err


def test_reward_viewer_puts_numbers_under_the_tokens(out_dir, loaded, capsys):
    code, out, err = run_main(["--out_dir", out_dir, "--rewards", "--max_new_tokens", 8, "--temperature", 0], capsys)
    assert code == 0 and "R = sum_t r_t" in out, err
    model, vocab, problems = loaded
    tokens = model.generate([problems[0].prompt], 8, temperature=0, eos_id=vocab.eos)[0]
    rows = {}
    for line in out.splitlines():  # rows wrap: gather each row's cells over all blocks
        name = line[:8].strip()
        if name in ("token", "r_t", "V(s_t)"):
            rows.setdefault(name, []).extend(line[8:].split())
    assert rows["token"] == [sample.token_label(vocab, t).strip() for t in tokens]
    assert len([float(v) for v in rows["r_t"]]) == len([float(v) for v in rows["V(s_t)"]]) == len(tokens)


def test_eval_on_text_data_reports_what_it_can(tmp_path, capsys):
    words = "the quick brown fox jumps over the lazy dog and runs far away from here".split()
    (tmp_path / "text.txt").write_text(" ".join(words[i % len(words)] for i in range(600)))
    assert train.main([*TINY, "--data", str(tmp_path / "text.txt"), "--block_size", "32", "--max_iters", "2",
                       "--eval_interval", "100", "--out_dir", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    code, out, err = run_main(["--out_dir", tmp_path / "out", "--eval", "--num_problems", 3,
                               "--num_samples", 2], capsys)
    assert code == 0 and "not checkable" in out, err
    code, out, err = run_main(["--out_dir", tmp_path / "out", "--eval", "--json", "--num_problems", 3,
                               "--num_samples", 2], capsys)
    metrics = json.loads(out)
    assert metrics["accuracy_greedy"] is None and metrics["reward_spearman"] is None
    assert metrics["nll"] > 0 and 0 <= metrics["self_bleu"] <= 1


def test_an_empty_start_samples_from_the_start_of_a_text(out_dir, capsys):
    # data.prompt_ids: an empty prompt is EOS alone, the state before any text
    code, out, err = run_main(["--out_dir", out_dir, "--start", "", "--temperature", "0", "--max_new_tokens", 5],
                              capsys)
    checkpoint = load_checkpoint(str(out_dir / "ckpt.pt"))
    vocab = Vocab(checkpoint["vocab"]["gpt2_ids"])
    greedy = model_from_checkpoint(checkpoint).eval().generate([[vocab.eos]], 5, temperature=0.0, eos_id=vocab.eos)[0]
    assert code == 0 and out.split("\n---")[0] == "<|endoftext|>" + sample.text_of(vocab, greedy), err


@pytest.mark.parametrize("args,message", [
    (["--out_dir", "{tmp}/nothing"], "no checkpoint"),
    (["--out_dir", "{tmp}/corrupt"], "not a readable checkpoint"),
    (["--start", "Zebra \u2603"], "not in this model's vocabulary"),
    (["--start", "FILE:{tmp}/missing.txt"], "not found"),
    (["--start", "FILE:{tmp}/latin1.txt"], "is not UTF-8 text"),
    (["--device", "meta"], "--device meta is not usable here"),
    (["--seed", "-1"], "--seed must be in"),
    (["--seed", str(2**70)], "--seed must be in"),
    (["--beam", "0"], "--beam"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "0.5,x"], "--temperature"),
    (["--temperature", "0.5,1"], "with --eval"),
    (["--num_samples", "0"], "--num_samples"),
])
def test_bad_input_is_one_clear_line(out_dir, tmp_path, capsys, args, message):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ckpt.pt").write_bytes(b"not a checkpoint" * 100)
    (tmp_path / "latin1.txt").write_bytes("Ann has 3 pens at the caf\u00e9.".encode("latin-1"))
    argv = ["--out_dir", out_dir, *(a.format(tmp=tmp_path) for a in args)]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_training_log_and_eval_measure_greedy_accuracy_alike(tmp_path, capsys):
    """train.py's log and sample.py --eval score the same val problems the same way (data.greedy_accuracy):
    problems that do not fit the block are left out by both, and the closing EOS is not part of the answer.
    The model learns to answer '#### 1' to everything, so 3 of the 4 problems that fit are right."""
    words = "red green blue cat dog sun moon tree car hat".split()
    lines = [{"prompt": f"Q: {words[i % 10]} {words[i // 10 % 10]}?\n", "response": "#### 1"} for i in range(200)]
    (tmp_path / "train.jsonl").write_text("\n".join(map(json.dumps, lines)))
    val = [{"prompt": "Q: " + " ".join(words * 4) + "?\n", "response": "#### 1"},  # longer than the block
           *({"prompt": f"Q: {w} {w}?\n", "response": f"#### {1 + (w == 'cat')}"} for w in ("red", "cat", "sun", "car"))]
    (tmp_path / "val.jsonl").write_text("\n".join(map(json.dumps, val)))
    out = tmp_path / "out"
    assert train.main([*TINY, "--data", str(tmp_path / "train.jsonl"), "--val_data", str(tmp_path / "val.jsonl"),
                       "--block_size", "24", "--max_iters", "40", "--eval_interval", "40", "--eval_problems", "5",
                       "--learning_rate", "1e-2", "--min_lr", "1e-3", "--out_dir", str(out)]) == 0
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])["accuracy"]
    capsys.readouterr()
    assert sample.main(["--out_dir", str(out), "--eval", "--json", "--num_problems", "5", "--num_samples", "2"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_problems"] == 4
    assert logged == evaluated["accuracy_greedy"] == 0.75


@pytest.mark.parametrize("flags, outputs", [([], 5), (["--num_problems", 2, "--num_samples", 3], 6),
                                            (["--num_problems", 2, "--temperature", 0], 2),
                                            (["--start", "Ann has 3 pens.\n", "--num_samples", 2], 2),
                                            (["--start", "Ann has 3 pens.\n", "--beam", 2], 1)])
def test_num_samples_is_the_samples_of_each_prompt_and_num_problems_the_problems(out_dir, capsys, flags, outputs):
    code, out, err = run_main(["--out_dir", out_dir, "--max_new_tokens", 6, *flags], capsys)
    shown = out.split("---------------\n")[:-1]
    assert code == 0 and len(shown) == outputs, err
    prompts = [s.split("\n")[0] for s in shown]   # each problem's samples together, in order
    assert prompts == sorted(prompts, key=prompts.index) and len(set(prompts)) == (2 if "--num_problems" in flags else 1)


def test_the_beam_width_of_eval_is_4_unless_beam_says_and_rewards_takes_one_sample(out_dir, capsys):
    for flags, width in (([], 4), (["--beam", 2], 2)):
        code, out, err = run_main(["--out_dir", out_dir, "--eval", "--json", "--num_problems", 1, "--num_samples", 2,
                                   "--max_new_tokens", 4, *flags], capsys)
        assert code == 0 and json.loads(out)["beam"] == width, err
    for flags in (["--rewards", "--num_samples", 2], ["--start", "Ann", "--num_problems", 2]):
        code, out, err = run_main(["--out_dir", out_dir, *flags], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
    assert sample.parse_args([]).beam is None   # sampling, not beam search
