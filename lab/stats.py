"""The statistics of the Results: mean ± standard error over seeds, the 95% Student's t interval of
a paired difference, the one rule that turns an interval into words, and accuracy at matched
Self-BLEU (the frontier's verdict)."""

import math


def present(values: list) -> list[float]:
    """The values that exist (a metric a run lacks is None; a failed one NaN)."""
    return [v for v in values if v is not None and not math.isnan(v)]


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with df degrees of freedom, by the finite series of Abramowitz &
    Stegun 26.7.3-4 in theta = atan(t / sqrt(df))."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    for k in range(1 + df % 2, df - 1, 2):   # odd df: 2/3 c2, 2*4/(3*5) c2^2, ...; even: 1/2 c2, 1*3/(2*4) c2^2, ...
        term *= c2 * k / (k + 1)
        total += term
    if df % 2:
        return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    return math.sin(theta) * total


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (bisection on t_within), so that
    mean ± t_975(n - 1) x s.e. is a 95% interval."""
    low, high = 0.0, 1000.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_within(mid, df) < 0.95 else (low, mid)
    return (low + high) / 2


def t_interval(values: list[float]) -> tuple[float, float, float, float] | None:
    """(mean, s.e., low, high): the 95% interval of the mean by Student's t with n - 1 degrees of
    freedom. For paired data pass the per-seed differences. None for fewer than 2 values."""
    values = present(values)
    if len(values) < 2:
        return None
    m, se = mean_and_se(values)
    half = t_975(len(values) - 1) * se
    return m, se, m - half, m + half


CLAIM_RULE = ("A claim that a difference is positive (or negative) **holds** when the whole 95% interval of the "
              "difference (mean ± t₀.₉₇₅,ₙ₋₁ × s.e. over n paired seeds, Student's t) lies on the claimed side of "
              "zero, **does not hold** when the whole interval lies on the other side, and is **within noise** when "
              "the interval contains zero; then its ends bound the difference either way. One seed gives no "
              "interval and no word.")


def claim_word(low: float, high: float, sign: int = 1) -> str:
    """The one rule of the Results (CLAIM_RULE): what a 95% interval [low, high] of a difference says
    about the claim that the difference has this sign (+1: positive, -1: negative)."""
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (sign > 0) else "does not hold"
    return "within noise"


def signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def interval_text(values: list[float], sign: int = 1, word: bool = True, digits: int = 3, plain: bool = False) -> str:
    """'+m ± se [low, high] (n = k): word' for a claim of the given sign, or the one value. plain:
    no sign on the numbers (a quantity, not a difference)."""
    values = present(values)
    if not values:
        return "n/a"
    number = lambda x: (f"{x:.{digits}f}" if plain else f"{x:+.{digits}f}").replace("-", "−")
    found = t_interval(values)
    if found is None:
        return f"{number(values[0])} (n = 1)"
    m, se, low, high = found
    text = f"{number(m)} ± {se:.{digits}f} [{number(low)}, {number(high)}] (n = {len(values)})"
    return text + f": {claim_word(low, high, sign)}" if word else text


def mean_se_text(values: list[float]) -> str:
    """'m ± se' over the values that exist ('m' for one, 'n/a' for none): a table's cell."""
    values = present(values)
    if not values:
        return "n/a"
    m, se = mean_and_se(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {se:.3f}"


def accuracy_at(rows: list[dict], level: float) -> float | None:
    """Sampled accuracy at Self-BLEU `level`, linearly interpolated between the temperatures that
    bracket it (None outside the curve: no extrapolation)."""
    points = sorted((r["self_bleu"], r["accuracy_sample"]) for r in rows)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= level <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return None


def paired_difference(curves: dict[int, list[dict]], baseline: dict[int, list[dict]], level: float
                      ) -> list[float]:
    """Per seed that both have and whose curves both reach `level`: accuracy minus the baseline's."""
    pairs = [(accuracy_at(curves[s], level), accuracy_at(baseline[s], level)) for s in curves if s in baseline]
    return [a - b for a, b in pairs if a is not None and b is not None]
