"""metrics.py against independent computations: hand-worked BLEU cases (clipping, several
references, the closest reference length), Self-BLEU's averaging, distinct-n, and ranks and
Spearman's rho against slow definitions and known identities."""

import math
import random

import pytest

import metrics


# --- BLEU ---------------------------------------------------------------------------------------

def test_bleu_extremes_and_hand_computed_cases():
    words = "the cat sat on the mat".split()
    assert metrics.bleu(words, [words]) == 1.0
    assert metrics.bleu(words, ["a dog ran far".split()]) == 0.0
    # precisions 5/6, (3+1)/(5+1), (2+1)/(4+1), (1+1)/(3+1); same length, no brevity penalty
    assert metrics.bleu(words, ["the cat sat on a mat".split()]) == pytest.approx((1 / 6) ** 0.25)
    # every n-gram matches, but 2 words against 6: brevity penalty exp(1 - 6/2)
    assert metrics.bleu("the cat".split(), [words]) == pytest.approx(math.exp(-2))


def test_self_bleu_and_distinct_2():
    assert metrics.self_bleu([["a b c d"] * 3]) == 1.0
    assert metrics.self_bleu([["a b", "c d", "e f"]]) == 0.0
    assert metrics.self_bleu([["a b c d", "a b c d", "e f g h"]]) == pytest.approx(2 / 3)
    assert metrics.self_bleu([["only one"]]) is None
    assert metrics.distinct_n(["a b c", "a b d"]) == 0.75   # ab bc ab bd: 3 unique of 4
    assert metrics.distinct_n(["a b", "a b"]) == 0.5
    assert metrics.distinct_n(["a", "b"]) is None          # no bigram at all


def test_bleu_clips_repeated_words_to_the_reference_count():
    # unigrams: "the" x4 against one "the": 1/4; no shared bigram, trigram or 4-gram, so the
    # smoothed precisions are (0+1)/(3+1), (0+1)/(2+1), (0+1)/(1+1); 4 words against 2: no penalty
    got = metrics.bleu("the the the the".split(), ["the cat".split()])
    assert got == pytest.approx((1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25)


def test_bleu_counts_each_ngram_up_to_its_most_in_any_one_reference():
    # "a" twice is matched by the second reference, "b" by the first; bigrams "a a" and "a b" by
    # one reference each: 3/3, (2+1)/(2+1), (0+1)/(1+1), and no 4-gram at all: (0+1)/(0+1)
    got = metrics.bleu("a a b".split(), ["a b".split(), "a a".split()])
    assert got == pytest.approx(0.5 ** 0.25)
    # only the best reference's count counts, not the sum over references
    assert metrics.bleu("a a a".split(), ["a".split(), "a".split()]) == pytest.approx(
        (1 / 3 * 1 / 3 * 1 / 2) ** 0.25)


def test_bleu_brevity_uses_the_closest_reference_length_shorter_on_a_tie():
    # every n-gram matches the long reference; lengths 1 and 5 are both 2 away from 3: the
    # shorter one is the reference length, so there is no brevity penalty
    assert metrics.bleu("x y z".split(), ["x".split(), "x y z w v".split()]) == pytest.approx(1.0)
    # with only the long reference the penalty applies: exp(1 - 5/3)
    assert metrics.bleu("x y z".split(), ["x y z w v".split()]) == pytest.approx(math.exp(1 - 5 / 3))
    # the closest length wins even when it is longer: 4 (1 away) beats 1 (2 away)
    assert metrics.bleu("x y z".split(), ["x".split(), "x y z w".split()]) == pytest.approx(math.exp(1 - 4 / 3))


def test_bleu_is_not_symmetric_and_max_n_sets_the_order():
    short, long = "a b".split(), "a b c d".split()
    assert metrics.bleu(long, [short]) == pytest.approx((2 / 4 * 2 / 4 * 1 / 3 * 1 / 2) ** 0.25)
    assert metrics.bleu(short, [long]) == pytest.approx(math.exp(1 - 4 / 2))
    # BLEU-2: precisions 1/2 and (1+1)/(3+1)
    assert metrics.bleu("a b x y".split(), ["a b c d".split()], max_n=2) == pytest.approx(
        (2 / 4 * 2 / 4) ** 0.5)
    assert metrics.bleu([], ["a".split()]) == 0.0


def test_self_bleu_averages_over_texts_and_leaves_each_text_out_of_its_references():
    groups = [["a b c d", "a b c d"], ["a b c d", "a b c d", "e f g h"], ["only one"]]
    # scores 1, 1 | 1, 1, 0 (the odd one shares no word; with itself as a reference it would
    # score 1); the single-text group is skipped; the mean is over texts, not over groups (0.833)
    assert metrics.self_bleu(groups) == pytest.approx(4 / 5)
    assert metrics.self_bleu([["x y", "x z"]]) == pytest.approx(metrics.bleu(["x", "y"], [["x", "z"]]))
    assert metrics.self_bleu([]) is None


def test_distinct_n_counts_unique_ngrams_within_texts():
    assert metrics.distinct_n(["a b a b"]) == pytest.approx(2 / 3)      # ab ba ab
    assert metrics.distinct_n(["a b", "c d"]) == 1.0
    assert metrics.distinct_n(["a a a", "a"], n=1) == 0.25               # 1 unique word of 4
    assert metrics.distinct_n(["a b c", "a b c"], n=3) == 0.5
    assert metrics.ngrams("a b c".split(), 2) == {("a", "b"): 1, ("b", "c"): 1}
    assert metrics.ngrams("a b".split(), 3) == {}


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


def test_spearman_with_ties_and_undefined_cases():
    assert metrics.average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert metrics.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1)
    assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    # ranks 1..4 against 1.5, 1.5, 3.5, 3.5: covariance 4, variances 5 and 4
    assert metrics.spearman([1, 2, 3, 4], [0, 0, 1, 1]) == pytest.approx(4 / math.sqrt(20))
    assert metrics.spearman([1, 2, 3], [1, 1, 1]) is None  # e.g. every sample correct
    assert metrics.spearman([1], [0]) is None


def test_spearman_average_ranks_of_unsorted_values_with_several_runs_of_ties():
    assert metrics.average_ranks([3, 1, 3, 2, 3]) == [4, 1, 4, 2, 4]
    assert metrics.average_ranks([5.0, 5.0, 1.0, 1.0]) == [3.5, 3.5, 1.5, 1.5]
    assert metrics.average_ranks([2]) == [1]
    rng = random.Random(0)
    for _ in range(50):
        x = [rng.randint(0, 4) for _ in range(rng.randint(1, 9))]
        assert metrics.average_ranks(x) == slow_ranks(x), x


def test_spearman_matches_the_definition_and_the_no_ties_formula():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(3, 10)
        x = [rng.randint(0, 5) for _ in range(n)]
        y = [rng.random() < 0.5 for _ in range(n)]   # like correctness: 0/1 with ties
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert metrics.spearman(x, [float(v) for v in y]) == pytest.approx(slow_spearman(x, y))
    # without ties, rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    x, y = [0.1, 0.5, 0.2, 0.9, 0.7], [3, 1, 2, 5, 4]
    d2 = sum((a - b) ** 2 for a, b in zip(slow_ranks(x), slow_ranks(y)))
    assert metrics.spearman(x, y) == pytest.approx(1 - 6 * d2 / (5 * 24))


def test_spearman_sign_symmetry_and_undefined_cases():
    returns, correct = [-3.0, 2.5, 0.1, 4.0], [0.0, 1.0, 0.0, 1.0]
    rho = metrics.spearman(returns, correct)
    assert rho > 0.5                                        # higher return, more often correct
    assert metrics.spearman([-r for r in returns], correct) == pytest.approx(-rho)
    assert metrics.spearman(correct, returns) == pytest.approx(rho)
    assert metrics.spearman(returns, returns) == pytest.approx(1.0)
    assert metrics.spearman([1, 1, 1], [1, 2, 3]) is None   # constant returns
    assert metrics.spearman([1, 2], [2, 1]) == pytest.approx(-1.0)


def test_within_problem_spearman_averages_each_problems_own_correlation():
    # problem 1: R ranks (1, 2, 3), correct = (0, 0, 1): ranks of correct (1.5, 1.5, 3), rho = sqrt(3)/2
    # problem 2: the wrong sample has the highest R: rho = -sqrt(3)/2
    # problem 3: all correct, undefined, left out; problem 4: R all equal, undefined, left out
    returns = [[1.0, 2.0, 3.0], [5.0, 9.0, 7.0], [1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]
    correct = [[False, False, True], [True, False, True], [True, True, True], [True, False, False]]
    rho, n = metrics.within_problem_spearman(returns, correct)
    assert n == 2 and rho == pytest.approx((math.sqrt(3) / 2 - math.sqrt(3) / 2) / 2, abs=1e-12)
    rho, n = metrics.within_problem_spearman(returns[:1], correct[:1])
    assert n == 1 and rho == pytest.approx(math.sqrt(3) / 2)
    # a shift of one problem's returns (its V(s_0)) moves the pooled correlation, not the within one
    shifted = [[r + 100 for r in returns[0]]] + returns[1:2]
    assert metrics.within_problem_spearman(shifted, correct[:2]) == metrics.within_problem_spearman(returns[:2], correct[:2])
    pooled = lambda rs: metrics.spearman(sum(rs, []), [float(c) for c in sum(correct[:2], [])])
    assert pooled(shifted) != pooled(returns[:2])
    assert metrics.within_problem_spearman([[1.0, 2.0]], [[True, True]]) == (None, 0)
