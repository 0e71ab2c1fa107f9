"""The evaluation's metrics, on plain Python lists: BLEU and Self-BLEU (diversity), distinct-n,
Spearman's rank correlation (how well extracted rewards track correctness). Texts are compared as
whitespace-split words. `sample.py --eval` reports them; tests/test_metrics.py checks each against
hand-worked cases and slow definitions.
"""

import math
from collections import Counter


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu(candidate: list[str], references: list[list[str]], max_n: int = 4) -> float:
    """BLEU-4 (Papineni et al. 2002): brevity penalty times the geometric mean of the clipped
    n-gram precisions, n = 1..4. Smoothing: add one to numerator and denominator of the 2..4-gram
    precisions (Lin & Och 2004; Chen & Cherry 2014, method 2), so a short answer without a shared
    4-gram still scores; the unigram precision is not smoothed, so identical texts score exactly 1
    and texts sharing no word exactly 0."""
    if not candidate:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts, most_in_a_reference = ngrams(candidate, n), Counter()
        for reference in references:
            most_in_a_reference |= ngrams(reference, n)   # | keeps the larger count of each n-gram
        matched = sum(min(c, most_in_a_reference[g]) for g, c in counts.items())
        total = sum(counts.values())
        if n == 1 and matched == 0:
            return 0.0
        if n > 1:
            matched, total = matched + 1, total + 1
        log_precision += math.log(matched / total) / max_n
    c = len(candidate)
    r = min((abs(len(ref) - c), len(ref)) for ref in references)[1]  # closest reference length
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_precision)


def self_bleu(groups: list[list[str]]) -> float | None:
    """Mean BLEU of each text against the other texts of its group (Zhu et al. 2018, Texygen);
    groups are one problem's samples, those with fewer than two are skipped. Lower = more diverse."""
    scores = [bleu(text.split(), [other.split() for j, other in enumerate(group) if j != i])
              for group in groups if len(group) >= 2 for i, text in enumerate(group)]
    return sum(scores) / len(scores) if scores else None


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the texts (none crosses
    from one text into the next)."""
    counts = sum((ngrams(t.split(), n) for t in texts), Counter())
    return len(counts) / sum(counts.values()) if counts else None


def average_ranks(x: list[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    order = sorted(range(len(x)), key=x.__getitem__)
    ranks, start = [0.0] * len(x), 0
    for end in range(1, len(x) + 1):
        if end == len(x) or x[order[end]] != x[order[start]]:  # a run of ties ends here
            for k in order[start:end]:
                ranks[k] = (start + 1 + end) / 2               # the mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the average ranks; None where it is undefined
    (fewer than two points, or one side constant, e.g. every sample correct)."""
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def within_problem_spearman(returns: list[list[float]], correct: list[list[bool]]) -> tuple[float | None, int]:
    """Mean over problems of the Spearman correlation between each sample's return R and its
    correctness, and over how many problems. Pooling every problem's samples (reward_spearman)
    mixes in each prompt's own constant V(s_0); within one problem it cancels. A problem counts
    where its samples are neither all correct nor all wrong and their returns are not all equal."""
    per_problem = [spearman(r, [float(ok) for ok in c]) for r, c in zip(returns, correct)]
    defined = [rho for rho in per_problem if rho is not None]
    return (sum(defined) / len(defined) if defined else None), len(defined)
