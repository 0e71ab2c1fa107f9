"""sample.py's metrics against independent computations: hand-worked BLEU cases (clipping, several
references, the closest reference length), Self-BLEU's averaging, distinct-n, and ranks and
Spearman's rho against slow definitions and known identities."""

import math
import random

import pytest

import sample


# --- BLEU ---------------------------------------------------------------------------------------

def test_bleu_clips_repeated_words_to_the_reference_count():
    # unigrams: "the" x4 against one "the": 1/4; no shared bigram, trigram or 4-gram, so the
    # smoothed precisions are (0+1)/(3+1), (0+1)/(2+1), (0+1)/(1+1); 4 words against 2: no penalty
    got = sample.bleu("the the the the".split(), ["the cat".split()])
    assert got == pytest.approx((1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25)


def test_bleu_counts_each_ngram_up_to_its_most_in_any_one_reference():
    # "a" twice is matched by the second reference, "b" by the first; bigrams "a a" and "a b" by
    # one reference each: 3/3, (2+1)/(2+1), (0+1)/(1+1), and no 4-gram at all: (0+1)/(0+1)
    got = sample.bleu("a a b".split(), ["a b".split(), "a a".split()])
    assert got == pytest.approx(0.5 ** 0.25)
    # only the best reference's count counts, not the sum over references
    assert sample.bleu("a a a".split(), ["a".split(), "a".split()]) == pytest.approx(
        (1 / 3 * 1 / 3 * 1 / 2) ** 0.25)


def test_bleu_brevity_uses_the_closest_reference_length_shorter_on_a_tie():
    # every n-gram matches the long reference; lengths 1 and 5 are both 2 away from 3: the
    # shorter one is the reference length, so there is no brevity penalty
    assert sample.bleu("x y z".split(), ["x".split(), "x y z w v".split()]) == pytest.approx(1.0)
    # with only the long reference the penalty applies: exp(1 - 5/3)
    assert sample.bleu("x y z".split(), ["x y z w v".split()]) == pytest.approx(math.exp(1 - 5 / 3))
    # the closest length wins even when it is longer: 4 (1 away) beats 1 (2 away)
    assert sample.bleu("x y z".split(), ["x".split(), "x y z w".split()]) == pytest.approx(math.exp(1 - 4 / 3))


def test_bleu_is_not_symmetric_and_max_n_sets_the_order():
    short, long = "a b".split(), "a b c d".split()
    assert sample.bleu(long, [short]) == pytest.approx((2 / 4 * 2 / 4 * 1 / 3 * 1 / 2) ** 0.25)
    assert sample.bleu(short, [long]) == pytest.approx(math.exp(1 - 4 / 2))
    # BLEU-2: precisions 1/2 and (1+1)/(3+1)
    assert sample.bleu("a b x y".split(), ["a b c d".split()], max_n=2) == pytest.approx(
        (2 / 4 * 2 / 4) ** 0.5)
    assert sample.bleu([], ["a".split()]) == 0.0


def test_self_bleu_averages_over_texts_and_leaves_each_text_out_of_its_references():
    groups = [["a b c d", "a b c d"], ["a b c d", "a b c d", "e f g h"], ["only one"]]
    # scores 1, 1 | 1, 1, 0 (the odd one shares no word; with itself as a reference it would
    # score 1); the single-text group is skipped; the mean is over texts, not over groups (0.833)
    assert sample.self_bleu(groups) == pytest.approx(4 / 5)
    assert sample.self_bleu([["x y", "x z"]]) == pytest.approx(sample.bleu(["x", "y"], [["x", "z"]]))
    assert sample.self_bleu([]) is None


def test_distinct_n_counts_unique_ngrams_within_texts():
    assert sample.distinct_n(["a b a b"]) == pytest.approx(2 / 3)      # ab ba ab
    assert sample.distinct_n(["a b", "c d"]) == 1.0
    assert sample.distinct_n(["a a a", "a"], n=1) == 0.25               # 1 unique word of 4
    assert sample.distinct_n(["a b c", "a b c"], n=3) == 0.5
    assert sample.ngrams("a b c".split(), 2) == {("a", "b"): 1, ("b", "c"): 1}
    assert sample.ngrams("a b".split(), 3) == {}


# --- ranks and Spearman ------------------------------------------------------------------------------

def slow_ranks(x):
    """Rank of x_i: the number of smaller values, plus the mean position among its ties."""
    return [sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 for xi in x]


def slow_spearman(x, y):
    rx, ry = slow_ranks(x), slow_ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / n
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx) / n)
    sy = math.sqrt(sum((b - my) ** 2 for b in ry) / n)
    return cov / (sx * sy)


def test_spearman_average_ranks_of_unsorted_values_with_several_runs_of_ties():
    assert sample.average_ranks([3, 1, 3, 2, 3]) == [4, 1, 4, 2, 4]
    assert sample.average_ranks([5.0, 5.0, 1.0, 1.0]) == [3.5, 3.5, 1.5, 1.5]
    assert sample.average_ranks([2]) == [1]
    rng = random.Random(0)
    for _ in range(50):
        x = [rng.randint(0, 4) for _ in range(rng.randint(1, 9))]
        assert sample.average_ranks(x) == slow_ranks(x), x


def test_spearman_matches_the_definition_and_the_no_ties_formula():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(3, 10)
        x = [rng.randint(0, 5) for _ in range(n)]
        y = [rng.random() < 0.5 for _ in range(n)]   # like correctness: 0/1 with ties
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert sample.spearman(x, [float(v) for v in y]) == pytest.approx(slow_spearman(x, y))
    # without ties, rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    x, y = [0.1, 0.5, 0.2, 0.9, 0.7], [3, 1, 2, 5, 4]
    d2 = sum((a - b) ** 2 for a, b in zip(slow_ranks(x), slow_ranks(y)))
    assert sample.spearman(x, y) == pytest.approx(1 - 6 * d2 / (5 * 24))


def test_spearman_sign_symmetry_and_undefined_cases():
    returns, correct = [-3.0, 2.5, 0.1, 4.0], [0.0, 1.0, 0.0, 1.0]
    rho = sample.spearman(returns, correct)
    assert rho > 0.5                                        # higher return, more often correct
    assert sample.spearman([-r for r in returns], correct) == pytest.approx(-rho)
    assert sample.spearman(correct, returns) == pytest.approx(rho)
    assert sample.spearman(returns, returns) == pytest.approx(1.0)
    assert sample.spearman([1, 1, 1], [1, 2, 3]) is None   # constant returns
    assert sample.spearman([1, 2], [2, 1]) == pytest.approx(-1.0)
