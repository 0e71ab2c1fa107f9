"""What the model learns from: tokenizer, the built-in task (task.py) or your own files, batches
with masks, and the policy's own samples (online IQLearn, GAIL); and the problems with checkable
answers that greedy accuracy is measured on.

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

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import tiktoken

from errors import UserError
from task import TaskConfig, builtin_task

IGNORE = -1


class DataError(UserError):
    """A problem with the user's data: a missing or unreadable file, too little of it, a bad task knob."""


class UnknownToken(DataError):
    """Text with a token that a compact vocabulary (a checkpoint's) does not have."""


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
        return cls(state["gpt2_ids"], state["padded"])

    def from_gpt2(self, ids: list[int]) -> list[int]:
        if self._to_model is None:
            return list(ids)
        missing = [i for i in ids if i not in self._to_model]
        if missing:
            raise UnknownToken(f"token {gpt2().decode([missing[0]])!r} (GPT-2 id {missing[0]}) is not "
                            "in this model's vocabulary")
        return [self._to_model[i] for i in ids]

    def encode(self, text: str) -> list[int]:
        return self.from_gpt2(gpt2().encode_ordinary(text))

    def decode(self, ids: list[int]) -> str:
        """Model ids -> text; ids past GPT-2's table (full-vocab padding) are dropped."""
        gpt2_ids = ids if self.gpt2_ids is None else [self.gpt2_ids[i] for i in ids]
        return gpt2().decode([i for i in gpt2_ids if i < gpt2().n_vocab])


# ----------------------------------------------------------------------------------------------
# Your own data: JSONL pairs or running text

def _read(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        with open(path, encoding="utf-8-sig") as f:  # (-sig: a byte-order mark some editors write is not text)
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"data file is empty: {path}")
    return text


def read_jsonl(path: str) -> list[dict]:
    """{"prompt", "response"} records from a JSONL file of prompt/response or GSM8K question/answer
    objects, one per line (blank lines skipped). Checked here, where the line number is known: a
    line that is not JSON (a syntax error, nesting too deep to parse, an integer too long to
    convert), not such an object, or whose response is empty (no action to imitate) is a
    DataError naming path:line. An empty prompt is valid: see prompt_ids."""
    records = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # json's other failures: too deep, a too-long integer
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
            raise DataError(f"{path}:{number}: not valid JSON ({reason})") from None
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
            record = {"prompt": obj["prompt"], "response": obj["response"]}
        elif isinstance(obj, dict) and isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str):
            record = as_pair(obj)
        else:
            raise DataError(f'{path}:{number}: expected string fields "prompt" and "response" '
                            '(or "question" and "answer")')
        if not record["response"]:  # (every non-empty text is at least one GPT-2 token)
            raise DataError(f"{path}:{number}: the response is empty: there is no action to learn from")
        records.append(record)
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
        return answers_checkable([r["response"] for r in self.records.get("val", [])])


def answers_checkable(responses: list[str]) -> bool:
    """Whether every response ends in '#### N' (and there is one), so accuracy can be measured."""
    return bool(responses) and all(extract_answer(r) is not None for r in responses)


def answer_marker(vocab: Vocab) -> int | None:
    """The model id of "####", the token that opens a GSM8K answer line, or None if the vocabulary
    lacks it (data whose answers are not checkable)."""
    try:
        return vocab.encode("####")[0]
    except UnknownToken:
        return None


def prompt_ids(vocab: Vocab, prompt: str) -> list[int]:
    """The prompt's tokens: the initial state s_0. An empty prompt (unconditional text) is EOS alone.

    Why not refuse it: the first action a_0 needs a state to be scored in, Q(s_0, .) = the logits
    at the last prompt position, and an empty prefix has no position. EOS is the state before any
    text, as GPT-2 was trained (documents follow <|endoftext|>) and samples unconditionally; it is
    in every vocabulary. So prompt-less pairs train, evaluate and sample like any other."""
    return vocab.encode(prompt) or [vocab.eos]


def pair_item(vocab: Vocab, prompt: str, response: str) -> Item:
    """prompt + response + EOS. The prompt is tokenized on its own so the boundary is exact."""
    prompt_tokens, response_tokens = prompt_ids(vocab, prompt), vocab.encode(response)
    return Item(np.array(prompt_tokens + response_tokens + [vocab.eos]), len(prompt_tokens), True)


def _text_items(tokens: list[int], block_size: int) -> list[Item]:
    """Windows of block_size + 1 tokens (inputs and targets overlap by all but one) at stride
    block_size, the last one aligned to the end of the text, so all have the same length (a text
    shorter than that is one window)."""
    width = min(block_size + 1, len(tokens))
    starts = list(range(0, len(tokens) - width + 1, block_size))
    if starts[-1] + width < len(tokens):
        starts.append(len(tokens) - width)
    return [Item(np.array(tokens[i:i + width]), 0, False) for i in starts]


def _vocab_for(texts: list[str], full: bool, given: Vocab | None = None, grow: bool = False) -> Vocab:
    """The vocabulary of a run on these texts: `given` (a checkpoint's) if there is one, else the
    texts' own ids (or all of GPT-2's). grow: a given compact vocabulary takes in the texts' ids it
    lacks, so that a model can be fine-tuned on data with tokens its base never saw (their rows are
    made by runfiles.build_model); without it a missing token is the caller's error."""
    if given is not None and not (grow and given.gpt2_ids is not None):
        return given
    if full and given is None:
        return Vocab(None)
    own = set().union(*(gpt2().encode_ordinary(t) for t in texts))
    return Vocab(sorted(own | set(given.gpt2_ids if given else ())))


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
        try:
            splits = builtin_task(TaskConfig(**spec["task"]))
        except ValueError as e:  # the task's knobs are out of range: the user's arguments
            raise DataError(str(e)) from None
        return {k: [as_pair(p) for p in v] for k, v in splits.items()}
    if data.endswith(".jsonl"):
        train = read_jsonl(data)
        return dict(zip(("train", "val"), (train, read_jsonl(val_data)) if val_data else _held_out(train)))
    raise DataError(f"--data must be a .jsonl or .txt file, got {data}")


# The run configuration's data flags (train.py's and gail.py's), which data_spec reads: a run keeps
# them for life.
DATA_FIELDS = ("data", "val_data", "full_vocab", "task_steps", "task_min_steps", "task_max_value", "task_train")


def val_batches(val: list[Item], batch_size: int, n: int) -> list[list[Item]]:
    """The first n batches of the val split, wrapping around a short one: the same batches at every
    evaluation, so that the val numbers of a run are comparable over its iterations."""
    return [[val[(i * batch_size + j) % len(val)] for j in range(batch_size)] for i in range(n)]


def data_spec(c) -> dict:
    """What load_dataset needs to rebuild a run's data (stored in its checkpoint for sample.py), from
    a run configuration with the data flags (train.py's and gail.py's). The built-in task's flags map
    to TaskConfig's fields here: --task_steps is max_steps."""
    task = TaskConfig(max_steps=c.task_steps, min_steps=c.task_min_steps, max_value=c.task_max_value,
                      n_train=c.task_train)
    return {"data": c.data, "val_data": c.val_data, "full_vocab": c.full_vocab, "task": dataclasses.asdict(task)}


def fitting_pairs(vocab: Vocab, records: list[dict], block_size: int) -> list[tuple[dict, Item]]:
    """(record, item) for the records whose prompt + response + EOS fit in block_size + 1 tokens."""
    pairs = ((r, pair_item(vocab, r["prompt"], r["response"])) for r in records)
    return [(r, it) for r, it in pairs if len(it.tokens) <= block_size + 1]


def load_dataset(spec: dict, block_size: int, vocab: Vocab | None = None, grow: bool = False) -> Dataset:
    """Build the dataset a run trains on (spec as for load_records). The vocabulary is built from
    the data unless given (a checkpoint's vocabulary, when resuming or fine-tuning); grow: a given
    compact one is extended by the data's new tokens (fine-tuning, _vocab_for)."""
    records = load_records(spec)
    try:
        if records is None:
            return _load_text(spec["data"], spec.get("val_data"), block_size, spec.get("full_vocab", False), vocab,
                              grow)
        vocab = _vocab_for([r[part] for split in records.values() for r in split for part in ("prompt", "response")],
                           spec.get("full_vocab", False), vocab, grow)
        items = {split: [it for _, it in fitting_pairs(vocab, records[split], block_size)]
                 for split in ("train", "val")}
    except UnknownToken as e:  # only a given vocabulary lacks a token of the data
        raise DataError(f"{e}: a checkpoint's model knows only the tokens of the data it was trained on; train "
                        "on that data (its --data, --val_data and --task_* flags), or start from a model trained "
                        "with --full_vocab") from None
    dropped = 0
    for split in ("train", "val"):
        dropped += len(records[split]) - len(items[split])
        if not items[split]:
            raise DataError(f"no {split} example fits in block_size={block_size} tokens; "
                            "raise --block_size")
    return Dataset("pairs", vocab, items["train"], items["val"], records, dropped)


def _load_text(path: str, val_path: str | None, block_size: int, full_vocab: bool,
               vocab: Vocab | None, grow: bool) -> Dataset:
    text = _read(path)
    if val_path:
        train_text, val_text = text, _read(val_path)
    else:  # the last tenth, as nanoGPT holds out Shakespeare
        cut = int(len(text) * 0.9)
        train_text, val_text = text[:cut], text[cut:]
    vocab = _vocab_for([train_text, val_text], full_vocab, vocab, grow)
    train, val = (_text_items(vocab.encode(t), block_size) for t in (train_text, val_text))
    if len(train[0].tokens) < 2 or len(val[0].tokens) < 2:
        raise DataError(f"{path}: too little text to make a training and a validation window")
    return Dataset("text", vocab, train, val)


# ----------------------------------------------------------------------------------------------
# Problems with checkable answers, and greedy accuracy on them (train.py's log and sample.py's
# --eval measure it the same way)

@dataclass
class Problem:
    prompt: list[int]
    response: list[int]   # the reference continuation (with EOS for pairs), for nll
    reference: str        # its text, for answer checking


def problems_from(vocab: Vocab, records: list[dict], block_size: int, limit: int) -> list[Problem]:
    """The first `limit` records whose prompt + response + EOS fit the block, as Problems."""
    return [Problem(item.tokens[:item.n_prompt].tolist(), item.tokens[item.n_prompt:].tolist(), r["response"])
            for r, item in fitting_pairs(vocab, records, block_size)[:limit]]


def text_of(vocab: Vocab, tokens: list[int]) -> str:
    """A generated continuation as text, without its closing EOS."""
    return vocab.decode(tokens[:-1] if tokens[-1:] == [vocab.eos] else tokens)


def correct(vocab: Vocab, tokens: list[int], problem: Problem) -> bool:
    return is_correct(text_of(vocab, tokens), problem.reference)


def accuracy(vocab: Vocab, outputs: list[list[int]], problems: list[Problem]) -> float:
    return sum(correct(vocab, o, p) for o, p in zip(outputs, problems)) / len(problems)


def greedy_accuracy(model, vocab: Vocab, problems: list[Problem], max_new_tokens: int) -> float:
    """The share of problems whose greedy continuation (model.generate at temperature 0) is correct."""
    outputs = model.generate([p.prompt for p in problems], max_new_tokens, temperature=0.0, eos_id=vocab.eos)
    return accuracy(vocab, outputs, problems)


def policy_samples(model, expert: list[Item], dataset: Dataset) -> list[Item]:
    """Online IQLearn's data: the policy's own continuations (model.generate at temperature 1, in
    eval mode, no gradient) of the expert rows' prompts: the prompt of a pair, the first half of a
    text window. They may run as long as the longest expert continuation in the batch; one that
    stops there is cut, not terminal."""
    prompts = [item.tokens[:item.n_prompt if dataset.kind == "pairs" else len(item.tokens) // 2].tolist()
               for item in expert]
    budget = max(len(item.tokens) - len(p) for item, p in zip(expert, prompts))
    model.eval()
    continuations = model.generate(prompts, budget, temperature=1.0, eos_id=dataset.vocab.eos)
    model.train()
    return [Item(np.array(p + cont), len(p), cont[-1:] == [dataset.vocab.eos]) for p, cont in zip(prompts, continuations)]


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


def length_chunks(items: list[Item], k: int) -> list[tuple[list[Item], float]]:
    """A batch as at most k chunks of rows of similar length, each with its share of the batch's
    actions. collate pads a batch to its longest row (on the built-in task a fifth of the positions
    are padding); a chunk is padded only to its own, so computing the chunks one after the other
    costs less, and their mean losses weighted by these shares add up to the whole batch's mean
    loss: exactly, for nll and entropy (means over actions), and for td too where every row ends in
    a terminal action (each action then has a next state, so td averages over the same positions).
    Rows that do not (text windows, cut samples) stay one chunk, weight 1."""
    if k == 1 or not all(it.terminal for it in items):
        return [(items, 1.0)]
    rows = sorted(items, key=lambda it: len(it.tokens))
    actions = [len(it.tokens) - 1 - max(it.n_prompt - 1, 0) for it in rows]  # collate's targets
    bounds = np.linspace(0, len(rows), min(k, len(rows)) + 1).round().astype(int)
    return [(rows[a:b], sum(actions[a:b]) / sum(actions)) for a, b in zip(bounds[:-1], bounds[1:])]


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
        epoch, cursor = state["epoch"], state["cursor"]
        n = len(self._order_of(0))
        if not (isinstance(epoch, int) and isinstance(cursor, int) and epoch >= 0 and 0 <= cursor <= n):
            raise DataError(f"the checkpoint's data position (epoch {epoch}, item {cursor}) does not fit this "
                            f"data ({n} items an epoch per process)")
        self.epoch, self.cursor = epoch, cursor
        self._order = self._order_of(self.epoch)
