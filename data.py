"""What the model learns from: tokenizer, the built-in task, your own files, and batches with masks.

Two kinds of data, one batch layout. Every batch is three [B, T] arrays:
    x       input token ids (the state s_t is x[:t+1])
    y       the expert action a_t = the next token, or IGNORE where t is not an action (prompt, pad)
    done    True where a_t is end-of-text, the terminal action (V(s_{t+1}) = 0 in the TD term)
"pairs" data (the built-in task, prompt/response or GSM8K JSONL) gives one example per row: the
prompt masked out, the response and its closing EOS as actions, padding on the right. "text" data
(a .txt file) gives windows of running text where every position is an action and nothing is
terminal: the window's last position has no next state, which iqlearn.py leaves out of `td`.

The vocabulary is compact by default: only the GPT-2 ids that occur in the data (plus EOS),
renumbered densely, so a tiny model is not dominated by a 50k-row embedding table.
"""

import json
import os
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import tiktoken

IGNORE = -1


class DataError(ValueError):
    """A problem with the user's data or arguments: train.py prints it as one line and exits."""


# ----------------------------------------------------------------------------------------------
# Tokenizer and vocabulary

_ENCODING = None


def gpt2() -> tiktoken.Encoding:
    """tiktoken's GPT-2 BPE. It downloads its two files on first use; offline, point
    TIKTOKEN_CACHE_DIR at a folder that holds them."""
    global _ENCODING
    if _ENCODING is None:
        try:
            _ENCODING = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises requests/IO errors of many kinds
            raise DataError("could not load the GPT-2 tokenizer files (offline? set "
                            f"TIKTOKEN_CACHE_DIR to a folder holding them): {e}") from None
    return _ENCODING


class Vocab:
    """GPT-2 ids <-> the model's ids. Compact: the ids in `gpt2_ids`, renumbered 0..n-1.
    Full (gpt2_ids None): the identity, padded to a multiple of 64 for fast matmuls, or, with
    padded=False, exactly GPT-2's 50,257 ids: a pretrained GPT-2 has no rows for padding, and rows
    added with zero weights would score logit 0, real probability mass."""

    def __init__(self, gpt2_ids: list[int] | None, padded: bool = True):
        self.gpt2_ids = None if gpt2_ids is None else sorted(set(gpt2_ids) | {gpt2().eot_token})
        self.padded = padded and self.gpt2_ids is None
        if self.gpt2_ids is None:
            self.size = -(-gpt2().n_vocab // 64) * 64 if padded else gpt2().n_vocab
            self._to_model = None
        else:
            self.size = len(self.gpt2_ids)
            self._to_model = {g: i for i, g in enumerate(self.gpt2_ids)}
        self.eos = self.from_gpt2([gpt2().eot_token])[0]

    def state_dict(self) -> dict:
        """What a checkpoint stores to rebuild this vocabulary (Vocab.from_state)."""
        return {"gpt2_ids": self.gpt2_ids, "padded": self.padded}

    @classmethod
    def from_state(cls, state: dict) -> "Vocab":
        return cls(state["gpt2_ids"], state.get("padded", True))  # older checkpoints: full was padded

    def from_gpt2(self, ids: list[int]) -> list[int]:
        if self._to_model is None:
            return list(ids)
        missing = [i for i in ids if i not in self._to_model]
        if missing:
            raise DataError(f"token {gpt2().decode([missing[0]])!r} (GPT-2 id {missing[0]}) is not "
                            "in this model's vocabulary")
        return [self._to_model[i] for i in ids]

    def encode(self, text: str) -> list[int]:
        return self.from_gpt2(gpt2().encode_ordinary(text))

    def decode(self, ids: list[int]) -> str:
        """Model ids -> text; ids past GPT-2's table (full-vocab padding) are dropped."""
        gpt2_ids = ids if self.gpt2_ids is None else [self.gpt2_ids[i] for i in ids]
        return gpt2().decode([i for i in gpt2_ids if i < gpt2().n_vocab])


# ----------------------------------------------------------------------------------------------
# The built-in task: GSM8K-style word problems, generated from a seed.
#
# Each problem is a short story with 2-4 arithmetic steps. The answer states one step a line and
# ends with "#### N", like GSM8K. The expert is genuinely diverse: every step has several
# phrasings, and where the math allows (two products, a sum of parts, rate x total time versus a
# sum of rate x times) the steps come in more than one valid order or strategy.

NAMES = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dan", "He"), ("Eva", "She"), ("Finn", "He")]
ITEMS = ["apples", "pens", "cards", "stickers", "books", "marbles"]


@dataclass
class TaskConfig:
    """Difficulty knobs of the built-in task and the sizes of its splits."""
    seed: int = 1337
    max_steps: int = 3        # solutions have 2..max_steps arithmetic lines (2 to 4)
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


def make_problem(rng: np.random.Generator, max_steps: int, max_value: int) -> dict:
    """One problem in GSM8K's format: {"question", "answer"}, the answer ending in "#### N"."""
    steps = int(rng.integers(2, max_steps + 1))
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
    larger one's training set with the same val and test sets."""
    if not 2 <= cfg.max_steps <= 4:
        raise DataError(f"the built-in task has 2 to 4 steps; got max_steps={cfg.max_steps}")
    if cfg.max_value < 10:
        raise DataError(f"the built-in task needs max_value >= 10; got {cfg.max_value}")
    rng = np.random.default_rng(cfg.seed)
    want = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    splits = {name: [] for name in want}
    seen = set()
    for _ in range(50 * sum(want.values()) + 100 * (cfg.n_val + cfg.n_test)):
        if all(len(splits[s]) >= n for s, n in want.items()):
            return splits
        problem = make_problem(rng, cfg.max_steps, cfg.max_value)
        split = split_of(problem["question"])
        if problem["question"] not in seen and len(splits[split]) < want[split]:
            seen.add(problem["question"])
            splits[split].append(problem)
    raise DataError("the built-in task has too few distinct problems for these sizes; "
                    "raise max_value or max_steps")


# ----------------------------------------------------------------------------------------------
# Your own data: JSONL pairs or running text

def _read(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"data file is empty: {path}")
    return text


def read_jsonl(path: str) -> list[dict]:
    """{"prompt", "response"} records from a JSONL file of prompt/response or GSM8K question/answer
    objects, one per line (blank lines skipped)."""
    records = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
            records.append({"prompt": obj["prompt"], "response": obj["response"]})
        elif isinstance(obj, dict) and isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str):
            records.append(as_pair(obj))
        else:
            raise DataError(f'{path}:{number}: expected string fields "prompt" and "response" '
                            '(or "question" and "answer")')
    return records


def as_pair(problem: dict) -> dict:
    """A GSM8K-format problem as a prompt/response pair: the question and a newline, then the answer."""
    return {"prompt": problem["question"] + "\n", "response": problem["answer"]}


# ----------------------------------------------------------------------------------------------
# Answers

_ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")


def extract_answer(text: str) -> float | None:
    """The number after the last '####' (commas allowed), or None."""
    found = _ANSWER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def is_correct(generated: str, reference: str) -> bool:
    """Does the generated response state the reference's final answer?"""
    answer = extract_answer(generated)
    return answer is not None and answer == extract_answer(reference)


# ----------------------------------------------------------------------------------------------
# Tokenized datasets and batches

@dataclass
class Item:
    """One row of a batch: token ids, how many of them are prompt, and whether the last is EOS."""
    tokens: np.ndarray
    n_prompt: int
    terminal: bool


@dataclass
class Dataset:
    kind: str                  # "pairs" or "text"
    vocab: Vocab
    train: list[Item]
    val: list[Item]
    records: dict[str, list[dict]] = field(default_factory=dict)  # pairs: {"prompt", "response"} per split
    n_dropped: int = 0         # pairs longer than block_size + 1 tokens, left out

    @property
    def checkable(self) -> bool:
        """Whether val answers end in '#### N', so accuracy can be measured."""
        return answers_checkable(self.records.get("val", []))


def answers_checkable(records: list[dict]) -> bool:
    """Whether every response ends in '#### N' (and there is one), so accuracy can be measured."""
    return bool(records) and all(extract_answer(r["response"]) is not None for r in records)


def pair_item(vocab: Vocab, prompt: str, response: str) -> Item:
    """prompt + response + EOS. The prompt is tokenized on its own so the boundary is exact."""
    prompt_ids, response_ids = vocab.encode(prompt), vocab.encode(response)
    return Item(np.array(prompt_ids + response_ids + [vocab.eos]), len(prompt_ids), True)


def _text_items(tokens: list[int], block_size: int) -> list[Item]:
    """Windows of block_size + 1 tokens (inputs and targets overlap by all but one) at stride
    block_size, the last one aligned to the end of the text, so all have the same length (a text
    shorter than that is one window)."""
    width = min(block_size + 1, len(tokens))
    starts = list(range(0, len(tokens) - width + 1, block_size))
    if starts[-1] + width < len(tokens):
        starts.append(len(tokens) - width)
    return [Item(np.array(tokens[i:i + width]), 0, False) for i in starts]


def _vocab_for(texts: list[str], full: bool) -> Vocab:
    if full:
        return Vocab(None)
    return Vocab(sorted(set().union(*(gpt2().encode_ordinary(t) for t in texts))))


def _held_out(records: list, share: int = 20) -> tuple[list, list]:
    """A deterministic 1-in-share validation slice (at least one record)."""
    if len(records) < 2:
        raise DataError("need at least 2 examples to hold one out for validation (or pass --val_data)")
    order = np.random.default_rng(0).permutation(len(records))
    n_val = max(1, len(records) // share)
    return [records[i] for i in sorted(order[n_val:])], [records[i] for i in sorted(order[:n_val])]


def load_records(spec: dict) -> dict[str, list[dict]] | None:
    """The {"prompt", "response"} records of each split of pairs data (the built-in task or JSONL),
    or None for running text. spec: {"data": path or None (built-in task), "val_data": path or
    None, "task": TaskConfig fields, "full_vocab": bool}."""
    data, val_data = spec.get("data"), spec.get("val_data")
    if data is not None and data.endswith(".txt"):
        return None
    if data is None:
        return {k: [as_pair(p) for p in v] for k, v in builtin_task(TaskConfig(**spec["task"])).items()}
    if data.endswith(".jsonl"):
        train = read_jsonl(data)
        return dict(zip(("train", "val"), (train, read_jsonl(val_data)) if val_data else _held_out(train)))
    raise DataError(f"--data must be a .jsonl or .txt file, got {data}")


def fitting_pairs(vocab: Vocab, records: list[dict], block_size: int) -> list[tuple[dict, Item]]:
    """(record, item) for the records whose prompt + response + EOS fit in block_size + 1 tokens."""
    pairs = ((r, pair_item(vocab, r["prompt"], r["response"])) for r in records)
    return [(r, it) for r, it in pairs if len(it.tokens) <= block_size + 1]


def load_dataset(spec: dict, block_size: int, vocab: Vocab | None = None) -> Dataset:
    """Build the dataset a run trains on (spec as for load_records). The vocabulary is built from
    the data unless given (a checkpoint's vocabulary, when resuming or fine-tuning)."""
    records = load_records(spec)
    if records is None:
        return _load_text(spec["data"], spec.get("val_data"), block_size, spec.get("full_vocab", False), vocab)
    if vocab is None:
        vocab = _vocab_for([r[part] for split in records.values() for r in split for part in ("prompt", "response")],
                           spec.get("full_vocab", False))
    items, dropped = {}, 0
    for split in ("train", "val"):
        items[split] = [it for _, it in fitting_pairs(vocab, records[split], block_size)]
        dropped += len(records[split]) - len(items[split])
        if not items[split]:
            raise DataError(f"no {split} example fits in block_size={block_size} tokens; "
                            "raise --block_size")
    return Dataset("pairs", vocab, items["train"], items["val"], records, dropped)


def _load_text(path: str, val_path: str | None, block_size: int, full_vocab: bool,
               vocab: Vocab | None) -> Dataset:
    text = _read(path)
    if val_path:
        train_text, val_text = text, _read(val_path)
    else:  # the last tenth, as nanoGPT holds out Shakespeare
        cut = int(len(text) * 0.9)
        train_text, val_text = text[:cut], text[cut:]
    vocab = vocab or _vocab_for([train_text, val_text], full_vocab)
    train, val = (_text_items(vocab.encode(t), block_size) for t in (train_text, val_text))
    if len(train[0].tokens) < 2 or len(val[0].tokens) < 2:
        raise DataError(f"{path}: too little text to make a training and a validation window")
    return Dataset("text", vocab, train, val)


def collate(items: list[Item], pad_id: int = 0, with_last_state: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items -> (x, y, done), each [B, T], right-padded to the longest item.
    x[t] = tokens[t]; y[t] = tokens[t + 1] where that is an action, IGNORE for prompt and padding;
    done[t] = True where y[t] is the closing EOS. A row that neither ends in EOS nor fills the
    batch loses its last target: its next state would be padding, whose value means nothing.
    with_last_state: x holds each row's last token too (T one longer), so the state after the last
    action is computed and no row loses a target (scoring a sample cut off before EOS needs it)."""
    extra = int(with_last_state)
    T = max(len(it.tokens) for it in items) - 1 + extra
    x = np.full((len(items), T), pad_id, dtype=np.int64)
    y = np.full((len(items), T), IGNORE, dtype=np.int64)
    done = np.zeros((len(items), T), dtype=bool)
    for b, it in enumerate(items):
        n = len(it.tokens) - 1
        x[b, :n + extra] = it.tokens[:n + extra]
        y[b, :n] = it.tokens[1:]
        y[b, :max(it.n_prompt - 1, 0)] = IGNORE  # targets that are still prompt tokens
        done[b, n - 1] = it.terminal
        if not it.terminal and n < T and not with_last_state:
            y[b, n - 1] = IGNORE
    return x, y, done


class Batches:
    """An endless stream of batches over items: each epoch visits them in a fresh random order
    (derived from seed and epoch, so the stream's whole state is two integers and resumes exactly).
    With several ranks, rank r takes every world-th item of the shared order: disjoint data."""

    def __init__(self, items: list[Item], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if len(items) < world:
            raise DataError(f"{len(items)} training examples cannot be split over {world} processes")
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.cursor = 0, 0
        self._order = self._order_of(0)

    def _order_of(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
        return order[self.rank::self.world]

    def next(self) -> list[Item]:
        chosen = []
        while len(chosen) < self.batch_size:
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._order_of(self.epoch)
            take = self._order[self.cursor:self.cursor + self.batch_size - len(chosen)]
            chosen += [self.items[i] for i in take]
            self.cursor += len(take)
        return chosen

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._order_of(self.epoch)
