"""The built-in task: GSM8K-style word problems, generated from a seed (no download).

Each problem is a short story with 2-4 arithmetic steps. The answer states one step a line and ends
with "#### N", like GSM8K. The expert is genuinely diverse: every step has several phrasings, and
where the math allows (two products, a sum of parts, rate x total time versus a sum of rate x
times) the steps come in more than one valid order or strategy. data.py turns the problems into
prompt/response pairs; nothing here knows about tokens.
"""

import zlib
from dataclasses import dataclass

import numpy as np

NAMES = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dan", "He"), ("Eva", "She"), ("Finn", "He")]
ITEMS = ["apples", "pens", "cards", "stickers", "books", "marbles"]


@dataclass
class TaskConfig:
    """Difficulty knobs of the built-in task and the sizes of its splits."""
    seed: int = 1337
    max_steps: int = 3        # solutions have min_steps..max_steps arithmetic lines (2 to 4)
    min_steps: int = 2
    max_value: int = 50       # starting amounts are at most about this; factors are 2..6
    n_train: int = 20000
    n_val: int = 500
    n_test: int = 500


def _pick(rng: np.random.Generator, options: list):
    return options[rng.integers(len(options))]


def _say(rng: np.random.Generator, phrasings: list[str], **values) -> str:
    """One of several phrasings of the same sentence, filled in ({he_l}: the pronoun mid-sentence)."""
    if "he" in values:
        values["he_l"] = values["he"].lower()
    return _pick(rng, phrasings).format(**values)


def _either_order(rng: np.random.Generator, first: str, second: str) -> list[str]:
    """Two independent steps, in either order: both are valid solutions."""
    return [first, second] if rng.random() < 0.5 else [second, first]


def _factor(rng: np.random.Generator) -> int:
    return int(rng.integers(2, 7))


def _amount(rng: np.random.Generator, low: int, span: int) -> int:
    return int(rng.integers(low, low + span + 1))


def _cost_line(rng, he: str, item: str, n: int, price: int) -> str:
    return _say(rng, ["{he} spends {n} * {p} = {c} dollars on {item}.",
                      "The {item} cost {n} * {p} = {c} dollars.",
                      "{n} {item} at {p} dollars each cost {n} * {p} = {c} dollars."],
                he=he, item=item, n=n, p=price, c=n * price)


def _buy(rng, steps: int, hi: int) -> tuple[str, list[str], int]:
    """Money left after shopping. 2 steps: one kind of item; 3: earnings first; 4: two kinds,
    either totalled or subtracted one at a time."""
    (name, he), item = _pick(rng, NAMES), _pick(rng, ITEMS)
    n, price = _factor(rng), _factor(rng)
    if steps == 2:
        money = _amount(rng, n * price, hi)
        q = f"{name} has {money} dollars. {he} buys {n} {item} for {price} dollars each."
        lines, spent = [_cost_line(rng, he, item, n, price)], n * price
    elif steps == 3:
        earned = _amount(rng, 1, hi // 2)
        money = _amount(rng, max(n * price - earned, 1), hi)
        q = f"{name} has {money} dollars and earns {earned} more. {he} buys {n} {item} for {price} dollars each."
        has = _say(rng, ["{he} has {m} + {e} = {s} dollars.", "Now {he_l} has {m} + {e} = {s} dollars."],
                   he=he, m=money, e=earned, s=money + earned)
        lines, money, spent = _either_order(rng, has, _cost_line(rng, he, item, n, price)), money + earned, n * price
    else:
        item2 = _pick(rng, [i for i in ITEMS if i != item])
        n2, price2 = _factor(rng), _factor(rng)
        money = _amount(rng, n * price + n2 * price2, hi)
        q = (f"{name} has {money} dollars. {he} buys {n} {item} for {price} dollars each "
             f"and {n2} {item2} for {price2} dollars each.")
        lines = _either_order(rng, _cost_line(rng, he, item, n, price), _cost_line(rng, he, item2, n2, price2))
        if rng.random() < 0.5:
            spent = n * price + n2 * price2
            lines.append(_say(rng, ["In total {he_l} spends {a} + {b} = {s} dollars.",
                                    "Together they cost {a} + {b} = {s} dollars."],
                              he=he, a=n * price, b=n2 * price2, s=spent))
        else:
            lines.append(f"After the {item} {he.lower()} has {money} - {n * price} = {money - n * price} dollars.")
            money, spent = money - n * price, n2 * price2
    left = money - spent
    lines.append(_say(rng, ["{he} has {m} - {s} = {r} dollars left.", "{m} - {s} = {r} dollars are left."],
                      he=he, m=money, s=spent, r=left))
    ask = _say(rng, ["How many dollars does {name} have left?", "How much money does {name} have left?"], name=name)
    return f"{q} {ask}", lines, left


def _rate(rng, steps: int, hi: int) -> tuple[str, list[str], int]:
    """A machine's output over two days: rate * total hours (2 lines) or the two days' outputs
    added up (3 lines); at 4 steps some are sold afterwards."""
    item = _pick(rng, ITEMS)
    rate, mon, tue = _factor(rng), _factor(rng), _factor(rng)
    made = rate * (mon + tue)
    sell = steps == 4
    q = f"A machine makes {rate} {item} an hour. It works {mon} hours on Monday and {tue} hours on Tuesday."
    if steps - sell >= 3 and rng.random() < 0.5:
        lines = _either_order(
            rng, _say(rng, ["On Monday it makes {r} * {h} = {m} {item}.", "Monday gives {h} * {r} = {m} {item}."],
                      r=rate, h=mon, m=rate * mon, item=item),
            _say(rng, ["On Tuesday it makes {r} * {h} = {m} {item}.", "Tuesday gives {h} * {r} = {m} {item}."],
                 r=rate, h=tue, m=rate * tue, item=item))
        lines.append(_say(rng, ["In total it makes {a} + {b} = {m} {item}.", "{a} + {b} = {m} {item} in all."],
                          a=rate * mon, b=rate * tue, m=made, item=item))
    else:
        lines = [_say(rng, ["It works {a} + {b} = {t} hours.", "That is {a} + {b} = {t} hours in total."],
                      a=mon, b=tue, t=mon + tue),
                 _say(rng, ["It makes {r} * {t} = {m} {item}.", "So it makes {t} * {r} = {m} {item}."],
                      r=rate, t=mon + tue, m=made, item=item)]
    if not sell:
        return q + f" How many {item} does it make?", lines, made
    sold = _amount(rng, 1, made - 1)
    lines.append(_say(rng, ["{m} - {s} = {r} {item} are left.", "After selling {s}, {m} - {s} = {r} {item} are left."],
                      m=made, s=sold, r=made - sold, item=item))
    return q + f" Then {sold} {item} are sold. How many {item} are left?", lines, made - sold


def _share(rng, steps: int, hi: int) -> tuple[str, list[str], int]:
    """Two people pool their items (keep some back at 3+ steps) and split the rest equally."""
    (first, _), (second, _) = [NAMES[i] for i in rng.choice(len(NAMES), size=2, replace=False)]
    item, friends = _pick(rng, ITEMS), _factor(rng)
    each = _amount(rng, 2, max(hi // 6, 1))
    kept = _amount(rng, 1, hi // 5) if steps >= 3 else 0
    total = friends * each + kept
    a = _amount(rng, 2, total - 4)
    q = f"{first} has {a} {item} and {second} has {total - a} {item}."
    lines = [_say(rng, ["Together they have {a} + {b} = {s} {item}.", "They have {a} + {b} = {s} {item} in all."],
                  a=a, b=total - a, s=total, item=item)]
    if kept:
        q += f" They keep {kept} {item}."
        lines.append(_say(rng, ["They share {s} - {k} = {r} {item}.", "That leaves {s} - {k} = {r} {item}."],
                          s=total, k=kept, r=total - kept, item=item))
    lines.append(_say(rng, ["Each friend gets {s} / {f} = {e} {item}.", "{s} / {f} = {e} {item} for each friend."],
                      s=total - kept, f=friends, e=each, item=item))
    rest = "the rest" if kept else "them"
    return (f"{q} They share {rest} equally among {friends} friends. How many {item} does each friend get?",
            lines, each)


def _compare(rng, steps: int, hi: int) -> tuple[str, list[str], int]:
    """'k times as many' (and, at 3+ steps, 'd fewer than that'), then all of them together, the
    parts added in any order."""
    people = [NAMES[i][0] for i in rng.choice(len(NAMES), size=3, replace=False)]
    item, k = _pick(rng, ITEMS), _factor(rng)
    a = _amount(rng, 1, max(hi // 4, 1))
    q = f"{people[0]} has {a} {item}. {people[1]} has {k} times as many."
    lines = [_say(rng, ["{p} has {a} * {k} = {b} {item}.", "{p} has {k} * {a} = {b} {item}."],
                  p=people[1], a=a, k=k, b=a * k, item=item)]
    counts = [a, a * k]
    if steps >= 3:
        fewer = _amount(rng, 1, a * k - 2)
        q += f" {people[2]} has {fewer} fewer than {people[1]}."
        lines.append(_say(rng, ["{p} has {b} - {d} = {c} {item}.", "{b} - {d} = {c}, so {p} has {c} {item}."],
                          p=people[2], b=a * k, d=fewer, c=a * k - fewer, item=item))
        counts.append(a * k - fewer)
    terms = " + ".join(str(c) for c in rng.permutation(counts))
    lines.append(_say(rng, ["Together they have {terms} = {t} {item}.", "In all, {terms} = {t} {item}."],
                      terms=terms, t=sum(counts), item=item))
    return q + f" How many {item} do they have together?", lines, sum(counts)


def _reading(rng, steps: int, hi: int) -> tuple[str, list[str], int]:
    """Pages left in a book after some days of reading (and, at 3+ steps, an extra session:
    add the pages read first, or subtract twice)."""
    name, he = _pick(rng, NAMES)
    per_day, days = _factor(rng), _factor(rng)
    read = per_day * days
    extra = _amount(rng, 1, hi // 5) if steps >= 3 else 0
    pages = _amount(rng, read + extra + 1, hi)
    q = f"A book has {pages} pages. {name} reads {per_day} pages a day for {days} days."
    lines = [_say(rng, ["{he} reads {p} * {d} = {r} pages.", "In {d} days {he_l} reads {d} * {p} = {r} pages."],
                  he=he, p=per_day, d=days, r=read)]
    left = pages - read - extra
    if not extra:
        lines.append(_say(rng, ["{n} - {r} = {left} pages are left.", "There are {n} - {r} = {left} pages left."],
                          n=pages, r=read, left=left))
    elif rng.random() < 0.5:
        q += f" Then {he.lower()} reads {extra} more pages."
        lines += [f"{he} reads {read} + {extra} = {read + extra} pages in all.",
                  _say(rng, ["{n} - {r} = {left} pages are left.", "There are {n} - {r} = {left} pages left."],
                       n=pages, r=read + extra, left=left)]
    else:
        q += f" Then {he.lower()} reads {extra} more pages."
        lines += [f"After {days} days {pages} - {read} = {pages - read} pages are left.",
                  _say(rng, ["{n} - {e} = {left} pages are left.", "Then {n} - {e} = {left} pages are left."],
                       n=pages - read, e=extra, left=left)]
    return q + " How many pages are left?", lines, left


# The types and the most solution lines each can have.
PROBLEM_TYPES = [(_buy, 4), (_rate, 4), (_share, 3), (_compare, 3), (_reading, 3)]


def make_problem(rng: np.random.Generator, max_steps: int, max_value: int, min_steps: int = 2) -> dict:
    """One problem in GSM8K's format: {"question", "answer"}, the answer ending in "#### N"."""
    steps = int(rng.integers(min_steps, max_steps + 1))
    make = _pick(rng, [f for f, most in PROBLEM_TYPES if most >= steps])
    question, lines, result = make(rng, steps, max_value)
    return {"question": question, "answer": "\n".join(lines + [f"#### {result}"])}


def split_of(question: str) -> str:
    """Val (5%), test (5%) or train, decided by the question text alone: a question never lands in
    two splits, whatever the seed or the sizes asked for."""
    bucket = zlib.crc32(question.encode()) % 100
    return "val" if bucket < 5 else "test" if bucket < 10 else "train"


def builtin_task(cfg: TaskConfig) -> dict[str, list[dict]]:
    """The built-in task's train/val/test problems, deterministic in cfg. Problems are drawn from
    one stream and each split keeps the first it gets, so a smaller n_train gives a prefix of a
    larger one's training set with the same val and test sets. Knobs out of range raise ValueError
    (data.py reports it as the user's error)."""
    if not 2 <= cfg.min_steps <= cfg.max_steps <= 4:
        raise ValueError(f"the built-in task has 2 to 4 steps, at least min_steps; got min_steps={cfg.min_steps}, "
                         f"max_steps={cfg.max_steps}")
    if cfg.max_value < 10:
        raise ValueError(f"the built-in task needs max_value >= 10; got {cfg.max_value}")
    rng = np.random.default_rng(cfg.seed)
    want = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    splits = {name: [] for name in want}
    seen = set()
    for _ in range(50 * sum(want.values()) + 100 * (cfg.n_val + cfg.n_test)):
        if all(len(splits[s]) >= n for s, n in want.items()):
            return splits
        problem = make_problem(rng, cfg.max_steps, cfg.max_value, cfg.min_steps)
        split = split_of(problem["question"])
        if problem["question"] not in seen and len(splits[split]) < want[split]:
            seen.add(problem["question"])
            splits[split].append(problem)
    raise ValueError("the built-in task has too few distinct problems for these sizes; "
                    "raise max_value or max_steps")
