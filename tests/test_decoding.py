"""Beam search, teacher-forced scoring, the reward viewer and `--eval`'s bookkeeping, on a bigram
stand-in model whose probabilities are written down, so every expected number is worked by hand
(no trained model, no copy of the code under test)."""

import math

import pytest
import torch

import data
import sample
from model import GPT, GPTConfig, KVCache

WORDS = ["<eos>", "####", "7", "8", "so", "Q", "R", "a", "b", "c"]
EOS, HASH, SEVEN, EIGHT, SO, Q, R, A, B, C = range(len(WORDS))
EPS = 1e-12  # "impossible": never sampled, and log(EPS) is a number, not -inf


class TableLM(torch.nn.Module):
    """Q(s_t, .) = log p(. | last token) + offset[last token]: a bigram model with a free soft value
    per state, V(s) = offset[last token] (each row's probabilities sum to one, up to EPS)."""

    def __init__(self, rows: dict[int, dict[int, float]], offsets: dict[int, float] | None = None, block_size=16):
        super().__init__()
        V = len(WORDS)
        table = torch.full((V, V), EPS, dtype=torch.float64)
        for s in range(V):
            for a, p in rows.get(s, {a: 1 / V for a in range(V)}).items():
                table[s, a] = p
        table = table.log() + torch.tensor([(offsets or {}).get(s, 0.0) for s in range(V)], dtype=torch.float64)[:, None]
        self.wte = torch.nn.Embedding.from_pretrained(table.float())
        self.config = GPTConfig(vocab_size=V, block_size=block_size, n_layer=0, n_head=1, n_embd=V)

    def new_cache(self, n_pad):
        return KVCache(0, self.config.block_size, n_pad)

    def forward(self, idx, cache=None, last_only=False):
        if cache is not None:
            cache.length += idx.size(1)
        return self.wte(idx[:, -1:] if last_only else idx)

    # the real decoding loop and its batching, on this model
    generate, _generate_batch, rows_per_batch = GPT.generate, GPT._generate_batch, GPT.rows_per_batch


class Words:
    """The vocabulary for TableLM: one word per id."""
    eos = EOS

    def decode(self, ids):
        return " ".join(WORDS[i] for i in ids)


# --- beam search ---------------------------------------------------------------------------------

def test_beam_search_normalises_by_length():
    # [EOS] alone has the larger total log-probability (log .51 > log .49*.99*.99) but the smaller
    # per-token one (-0.673 < -0.244): the normalised beam prefers the longer answer, greedy not.
    model = TableLM({Q: {EOS: .51, SO: .49}, SO: {HASH: .99, EOS: .01}, HASH: {EOS: .99, SEVEN: .01}})
    (greedy, greedy_logp), = sample.beam_search(model, [[Q]], 1, 6, EOS)
    (best, best_logp), = sample.beam_search(model, [[Q]], 2, 6, EOS)
    assert greedy == [EOS] and greedy_logp == pytest.approx(math.log(.51), abs=1e-5)
    assert best == [SO, HASH, EOS] and best_logp == pytest.approx(math.log(.49 * .99 * .99), abs=1e-5)
    # a budget of two tokens: the best unfinished candidate, at its per-token score (-0.36 > -0.67)
    (cut, cut_logp), = sample.beam_search(model, [[Q]], 2, 2, EOS)
    assert cut == [SO, HASH] and cut_logp == pytest.approx(math.log(.49 * .99), abs=1e-5)
    # the block caps the budget the same way: prompt of 2 in a block of 4 leaves 2 steps
    (capped, _), = sample.beam_search(TableLM({Q: {EOS: .51, SO: .49}, SO: {HASH: .99, EOS: .01},
                                               HASH: {EOS: .99, SEVEN: .01}}, block_size=4), [[R, Q]], 2, 50, EOS)
    assert capped == [SO, HASH]


def test_beam_search_prunes_by_normalised_score():
    # Width 3. After two steps the beam holds [a, c] and [a, 7] (-0.69 per token) and [b, ####]
    # (-0.80), and drops [EOS] (-1.20 per token, though its total -1.20 is the largest). [b, ####,
    # EOS] then wins at -0.54 per token; every path through a stays at -0.69. Pruning by total
    # log-probability would have kept [EOS] and dropped [b, ####] at step two.
    model = TableLM({Q: {A: .5, EOS: .3, B: .2}, A: {C: .5, SEVEN: .5}, C: {EOS: .5, EIGHT: .5},
                     SEVEN: {EOS: .5, EIGHT: .5}, EIGHT: {EOS: .5, EIGHT: .5}, B: {HASH: 1.0}, HASH: {EOS: 1.0}})
    (best, logp), = sample.beam_search(model, [[Q]], 3, 6, EOS)
    assert best == [B, HASH, EOS] and logp == pytest.approx(math.log(.2), abs=1e-5)


def test_beam_search_keeps_a_finished_beam_at_its_final_score():
    # [SO, EOS] ends at step 2 with log(.54)/2 = -0.31; the other beam goes on to [R, 7, EOS],
    # log(.24)/3 = -0.48. After EOS the model itself goes on: a finished beam must not follow it.
    model = TableLM({Q: {SO: .6, R: .4}, SO: {EOS: .9, SEVEN: .1}, R: {SEVEN: 1.0},
                     SEVEN: {EOS: .6, EIGHT: .4}, EOS: {SEVEN: .5, EIGHT: .5}})
    (best, logp), = sample.beam_search(model, [[Q]], 2, 8, EOS)
    assert best == [SO, EOS] and logp == pytest.approx(math.log(.54), abs=1e-5)


def test_beam_search_runs_until_every_kept_candidate_has_ended():
    # After two steps [R, ####] (-0.35, unfinished) leads [SO, EOS] (-0.60, finished); one step
    # more, [R, ####, EOS] (-0.24) wins. Stopping as soon as one beam ends would return [R, ####].
    model = TableLM({Q: {SO: .5, R: .5}, SO: {EOS: .6, SEVEN: .4}, R: {HASH: .99, EOS: .01},
                     HASH: {EOS: .99, SEVEN: .01}})
    (best, logp), = sample.beam_search(model, [[Q]], 2, 8, EOS)
    assert best == [R, HASH, EOS] and logp == pytest.approx(math.log(.5 * .99 * .99), abs=1e-5)


def test_beam_search_over_several_prompts_is_each_prompt_alone():
    model = TableLM({Q: {EOS: .51, SO: .49}, SO: {HASH: .99, EOS: .01}, HASH: {EOS: .99, SEVEN: .01},
                     R: {SEVEN: .7, EIGHT: .3}, SEVEN: {EOS: .6, EIGHT: .4}, EIGHT: {EOS: .9, SEVEN: .1}})
    prompts = [[Q], [SO, R], [R, R, Q]]
    together = sample.beam_search(model, prompts, 3, 6, EOS)
    alone = [sample.beam_search(model, [p], 3, 6, EOS)[0] for p in prompts]
    assert [t for t, _ in together] == [t for t, _ in alone] == [[SO, HASH, EOS], [SEVEN, EOS], [SO, HASH, EOS]]
    for (_, a), (_, b) in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-5)


# --- teacher-forced scores -------------------------------------------------------------------------

def test_score_gives_log_probs_values_and_rewards_by_hand():
    p = {Q: {SO: .25, HASH: .75}, SO: {HASH: .5, EIGHT: .5}, HASH: {EOS: .8, SEVEN: .2}}
    c = {Q: 2.0, SO: -1.0, HASH: 0.5}   # V(s) = c[last token]
    model, gamma = TableLM(p, c), 0.5
    # row 1: prompt [R, Q], response [SO, ####, EOS]; row 2: prompt [Q], cut after [SO, ####]
    full, cut = sample.score(model, [[R, Q], [Q]], [[SO, HASH, EOS], [SO, HASH]], gamma, EOS)
    logp = [math.log(.25), math.log(.5), math.log(.8)]
    assert full.logp == pytest.approx(logp, abs=1e-5)
    assert full.value == pytest.approx([2.0, -1.0, 0.5], abs=1e-5)
    # r_t = log pi + V(s_t) - gamma V(s_t+1), and V = 0 after EOS
    assert full.reward == pytest.approx([logp[0] + 2.0 - gamma * -1.0, logp[1] - 1.0 - gamma * 0.5,
                                         logp[2] + 0.5], abs=1e-5)
    # without EOS the last state's value still counts: the state after #### has V = 0.5
    assert cut.logp == pytest.approx(logp[:2], abs=1e-5)
    assert cut.reward == pytest.approx([logp[0] + 2.0 + gamma, logp[1] - 1.0 - gamma * 0.5], abs=1e-5)


# --- the reward viewer -----------------------------------------------------------------------------

def viewer_rows(out: str) -> dict[str, list[list[str]]]:
    """Each row's cells, block by block (the table wraps)."""
    rows = {}
    for line in out.splitlines():
        name = line[:8].strip()
        if name in ("token", "log pi", "r_t", "V(s_t)"):
            rows.setdefault(name, []).append(line[8:].split())
    return rows


@pytest.fixture(scope="module")
def words_vocab():
    return data.Vocab(data.gpt2().encode_ordinary("Q?\nShe has 8 dollars left.\n#### 8 \n  x"))


def test_reward_viewer_puts_each_number_in_its_own_row(words_vocab, capsys):
    vocab = words_vocab
    response = vocab.encode("She has 8 dollars left.\n#### 8") + [vocab.eos]
    n = len(response)
    scored = sample.Scored(logp=[-0.01 * (i + 1) for i in range(n)], value=[5.0 - 0.5 * i for i in range(n)],
                           reward=[1.0 + 0.25 * i for i in range(n)])
    sample.show_rewards(vocab, vocab.encode("Q?\n"), response, scored, 1.0, "#### 8", width=40)
    out = capsys.readouterr().out
    rows = viewer_rows(out)
    assert len(rows["token"]) > 1                                    # width 40: it wrapped
    table_lines = [line for line in out.splitlines() if line[:8].strip() in rows]
    assert max(len(line) for line in table_lines) <= 40 < max(len(line) for line in table_lines) + 8
    for name in rows:                                                # the blocks line up
        assert [len(b) for b in rows[name]] == [len(b) for b in rows["token"]], name
    cells = {name: sum(blocks, []) for name, blocks in rows.items()}
    assert cells["token"] == [sample.token_label(vocab, t).strip() for t in response]
    assert cells["log pi"] == [f"{v:.2f}" for v in scored.logp]
    assert cells["r_t"] == [f"{v:.2f}" for v in scored.reward]
    assert cells["V(s_t)"] == [f"{v:.2f}" for v in scored.value]
    R, logp = sum(scored.reward), sum(scored.logp)
    assert f"R = sum_t r_t = {R:.3f} over {n} tokens; log pi(y|x) = {logp:.3f}; V(s_0) = 5.000" in out
    assert f"R = V(s_0) + log pi(y|x) = {5.0 + logp:.3f}" in out   # gamma = 1, ends in EOS
    assert "[correct: reference 8]" in out and "sample: 'She has 8 dollars left.\\n#### 8'" in out


def test_reward_viewer_says_wrong_and_cut_off(words_vocab, capsys):
    vocab = words_vocab
    response = vocab.encode("She has 8")
    scored = sample.Scored([-0.5] * 3, [1.0] * 3, [0.1] * 3)
    sample.show_rewards(vocab, vocab.encode("Q?\n"), response, scored, 1.0, "#### 9")
    out = capsys.readouterr().out
    assert "[wrong: reference 9]" in out and "cut off before EOS" in out and "(gamma = 1: R" not in out
    scored = sample.Scored([-0.5] * 4, [1.0] * 4, [0.1] * 4)
    sample.show_rewards(vocab, vocab.encode("Q?\n"), response + [vocab.eos], scored, 0.9, "plain text")
    out = capsys.readouterr().out
    assert "correct" not in out and "wrong" not in out and "(gamma = 1: R" not in out  # gamma < 1
    assert "gamma = 0.9" in out


def test_token_label_makes_every_token_one_visible_cell(words_vocab):
    vocab = words_vocab
    newline, two_spaces = vocab.encode("\n"), vocab.encode("  ")
    assert sample.token_label(vocab, vocab.eos) == "<eos>"
    assert [sample.token_label(vocab, t) for t in newline] == ["\\n"]
    assert "".join(sample.token_label(vocab, t) for t in two_spaces) == "\u2423\u2423"
    assert sample.token_label(vocab, vocab.encode(" has")[0]) == " has"


# --- evaluate: which number lands in which field -----------------------------------------------------

def eval_args(num_samples, beam=2, seed=0):
    return sample.parse_args(["--eval", "--num_samples", str(num_samples), "--max_new_tokens", "6",
                              "--beam", str(beam), "--seed", str(seed)])


def evaluate(model, problems, checkable, args):
    """sample.measure at the one temperature the args give (--eval: 1.0): its one row."""
    (row,) = sample.measure(model, Words(), problems, checkable, args, 1.0, "cpu")
    return row


def test_evaluate_keeps_greedy_and_beam_accuracy_apart():
    # greedy: Q -> #### -> 7 (.6) -> EOS (.34): '#### 7', right. Beam 2: '#### 8' (log(.4*.98)/3
    # beats log(.6*.34)/3): wrong. Sampling says 7 first six times in ten: somewhere in between.
    model = TableLM({Q: {HASH: 1.0}, HASH: {SEVEN: .6, EIGHT: .4}, SEVEN: {EOS: .34, SEVEN: .33, EIGHT: .33},
                     EIGHT: {EOS: .98, SEVEN: .01, EIGHT: .01}})
    problems = [data.Problem([Q], [HASH, SEVEN, EOS], "#### 7")]
    m = evaluate(model, problems, True, eval_args(12))
    assert m["accuracy_greedy"] == 1.0 and m["accuracy_beam"] == 0.0
    assert 0 < m["accuracy_sample"] < 1
    assert m["nll"] == pytest.approx(-(math.log(.6) + math.log(.34)) / 3, abs=1e-4)
    assert m["num_problems"] == 1 and m["num_samples"] == 12 and m["beam"] == 2


def test_evaluate_diversity_and_reward_correlation_by_hand():
    # Two problems whose answers are certain: Q gives '#### 7' (right), R gives 'so 8' (wrong).
    # V(s_0) is 2 after Q and -1 after R, so with gamma = 1 every sample's return R = V(s_0):
    # higher for the right answers, Spearman +1.
    model = TableLM({Q: {HASH: 1.0}, HASH: {SEVEN: 1.0}, SEVEN: {EOS: 1.0}, R: {SO: 1.0}, SO: {EIGHT: 1.0},
                     EIGHT: {EOS: 1.0}}, offsets={Q: 2.0, R: -1.0})
    problems = [data.Problem([Q], [HASH, SEVEN, EOS], "#### 7"),
                data.Problem([R], [SO, SEVEN, EOS], "#### 7")]      # 7 after 'so': log(EPS)
    m = evaluate(model, problems, True, eval_args(3))
    assert m["accuracy_greedy"] == m["accuracy_sample"] == m["accuracy_beam"] == 0.5
    assert m["reward_spearman"] == pytest.approx(1.0)
    assert m["reward_mean"] == pytest.approx((3 * 2.0 + 3 * -1.0) / 6, abs=1e-4)
    assert m["self_bleu"] == 1.0 and m["self_bleu_correct"] == 1.0   # three copies per problem
    assert m["distinct_2"] == pytest.approx(1 / 3)                    # one bigram, three times
    assert m["nll"] == pytest.approx(-math.log(EPS) / 6, rel=1e-4)    # 6 reference tokens
    # answers not checkable: accuracies and the correlation are n/a, the rest is measured
    m = evaluate(model, problems, False, eval_args(3))
    assert m["accuracy_greedy"] is m["accuracy_beam"] is m["reward_spearman"] is m["self_bleu_correct"] is None
    assert m["self_bleu"] == 1.0


def test_evaluate_self_bleu_correct_uses_only_the_right_samples():
    # Q always answers '#### 7' (right, two identical texts: Self-BLEU 1); R says 'so 7' or 'so 8'
    # at random (wrong: no ####); with this seed one of each, so all samples together score < 1.
    model = TableLM({Q: {HASH: 1.0}, HASH: {SEVEN: 1.0}, SEVEN: {EOS: 1.0}, R: {SO: 1.0},
                     SO: {SEVEN: .5, EIGHT: .5}, EIGHT: {EOS: 1.0}})
    problems = [data.Problem([Q], [HASH, SEVEN, EOS], "#### 7"), data.Problem([R], [SO, EIGHT, EOS], "#### 7")]
    m = evaluate(model, problems, True, eval_args(2, seed=4))
    assert m["distinct_2"] == (1 / 2 + 2 / 2) / 2   # R's group: 'so 7' and 'so 8'
    assert m["accuracy_sample"] == 0.5
    assert m["self_bleu_correct"] == 1.0
    # 1, 1 for Q's copies; 'so 7' against 'so 8' and back: (1/2 * 1/2)^(1/4) each
    assert m["self_bleu"] == pytest.approx((2 + 2 * 0.5 ** 0.5) / 4)


def test_generate_runs_until_every_row_has_ended_and_cuts_each_after_eos():
    # Q ends at once; R says 'so #### EOS'; a batch waits for its slowest row, and the rows that
    # ended early keep nothing after their EOS
    model = TableLM({Q: {EOS: 1.0}, R: {SO: 1.0}, SO: {HASH: 1.0}, HASH: {EOS: 1.0}, EOS: {SEVEN: 1.0}})
    assert model.generate([[Q], [R, R], [R]], 8, temperature=0, eos_id=EOS) == [[EOS], [SO, HASH, EOS], [SO, HASH, EOS]]
    assert model.generate([[R]], 2, temperature=0, eos_id=EOS) == [[SO, HASH]]           # the budget
    assert model.generate([[Q]], 3, temperature=0) == [[EOS, SEVEN, EOS]]  # no eos_id: no stop (after 7: uniform, argmax 0)
    assert model.generate([[R] * 15], 8, temperature=0, eos_id=EOS) == [[SO]]          # the block (16)
    assert model.generate([[R] * 16], 8, temperature=0, eos_id=EOS) == [[]]            # a full block: nothing


def test_distinct_2_is_each_problems_own_then_averaged_over_problems():
    # Q's two samples are '#### 7' (1 distinct bigram of 2); R's are 'a b a b a b', cut at 6 tokens
    # (2 distinct of 5, twice: 2 of 10). Averaged over problems: (1/2 + 2/10) / 2; pooled over all
    # samples it would be 3 of 12, and a mean over samples would weigh the texts, not the problems.
    model = TableLM({Q: {HASH: 1.0}, HASH: {SEVEN: 1.0}, SEVEN: {EOS: 1.0}, R: {A: 1.0}, A: {B: 1.0}, B: {A: 1.0}})
    problems = [data.Problem([Q], [HASH, SEVEN, EOS], "#### 7"), data.Problem([R], [A, B, EOS], "#### 7")]
    m = evaluate(model, problems, True, eval_args(2))
    assert m["distinct_2"] == pytest.approx((1 / 2 + 2 / 10) / 2)


def test_score_of_many_rows_of_many_lengths_is_each_row_scored_alone():
    """score sorts rows by length and batches them 64 at a time: each row's numbers, and their
    order in the result, must be what scoring that row alone gives."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=9, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 16, (70, 2), generator=g).tolist()      # prompt + response within the block
    prompts = [torch.randint(0, 8, (p,), generator=g).tolist() for p, _ in lengths]
    responses = [torch.randint(0, 8, (r,), generator=g).tolist() + [8] * (i % 2)   # every other ends in EOS 8
                 for i, (_, r) in enumerate(lengths)]
    together = sample.score(model, prompts, responses, gamma=0.9, eos_id=8)
    for p, r, s in zip(prompts, responses, together):
        alone = sample.score(model, [p], [r], gamma=0.9, eos_id=8)[0]
        assert len(s.logp) == len(r)
        for a, b in ((s.logp, alone.logp), (s.value, alone.value), (s.reward, alone.reward)):
            assert a == pytest.approx(b, abs=1e-5)
