"""The files a run leaves in out_dir: skip this file on a first reading.

Checkpoints written atomically and durably and read back with one clear line when they are not
one, the model a checkpoint or --init_from describes, resuming a run, the lock that keeps two runs
out of one out_dir, and the log. train.py and gail.py call it; runtime.py holds the rest of the
run machinery (flags, devices, processes, stop signals).
"""

import contextlib
import dataclasses
import errno
import fcntl
import glob
import json
import os
import shutil
import stat
import tempfile
import typing
import warnings
from collections.abc import Iterator
from dataclasses import fields

import torch

from data import Vocab, data_spec
from errors import CheckpointError, UserError, WriteError
from model import GPT, GPTConfig
from runtime import agreed, flag_of


# ----------------------------------------------------------------------------------------------
# Checkpoints: one file, written atomically and durably, read back with a clear error when it is not one.

CHECKPOINT_KEYS = ("model", "model_args", "config", "vocab", "iter_num")


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt.pt")


def best_path(out_dir: str) -> str:
    return os.path.join(out_dir, "best.pt")


def reason(e: BaseException) -> str:
    """An exception as the few words a one-line error ends with: the OS's reason (strerror), else
    its message's first line, else its type."""
    message = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    if "inline_container" in message:  # torch's zip writer: a failed write(2), reported without its errno
        return f"a write failed part way, disk full or over a size limit? torch says: {message}"
    return message


@contextlib.contextmanager
def replacing(path: str, folder: bool = False) -> Iterator:
    """The one way files reach a run's folders: write what goes to `path` inside the block, into a
    temporary file (yielded, open for binary writing) or, with folder=True, a temporary folder
    (its path yielded) beside it; on leaving the block it is fsynced and renamed to `path`, and the
    directory fsynced.

    The rename is atomic: a reader (sample.py) opens either the previous file or the new one, never
    a part, and a crash mid-write leaves the previous one. The fsyncs make it durable: without the
    first, a power loss soon after the rename can leave an empty or truncated file under the new
    name; without the second, the rename itself may not survive. The temporary name is
    unpredictable and created exclusively (tempfile.mkstemp/mkdtemp: O_EXCL, so never through a
    link planted there); rename replaces a link at `path`, never its target; a folder is renamed
    only onto an absent or empty one. Any failure, in the block or after (disk full: an OSError,
    or torch's RuntimeError, or safetensors' error around it; permission denied; an interrupt)
    removes the temporary and leaves `path` as it was; an Exception becomes WriteError, one line."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        if folder:
            tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise WriteError(f"could not write {path} ({reason(e)})") from None
    try:
        if folder:
            yield tmp
        else:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        (os.rename if folder else os.replace)(tmp, path)
        fsync_directory(directory)
    except BaseException as e:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if isinstance(e, Exception) and not isinstance(e, UserError):
            raise WriteError(f"could not write {path} ({reason(e)})") from None
        raise


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale_temporaries(out_dir: str) -> list[str]:
    """What a write of a run killed mid-way (SIGKILL, a power cut) leaves in out_dir: replacing()'s
    temporary files of ckpt.pt, best.pt and log.jsonl, and the fixed-name ones of earlier versions
    (ckpt.pt.tmp)."""
    names = [checkpoint_path(out_dir), best_path(out_dir), log_path(out_dir)]
    found = [p for path in names for p in glob.glob(os.path.join(glob.escape(out_dir),
                                                                  f".{glob.escape(os.path.basename(path))}.*.tmp"))]
    found += [p for p in (names[0] + ".tmp", names[1] + ".tmp") if os.path.lexists(p)]
    return sorted(p for p in found if os.path.islink(p) or not os.path.isdir(p))  # (a folder is not ours)


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """torch.save into `path` by replacing(): atomic, durable, WriteError on failure."""
    with replacing(path) as f:
        torch.save(checkpoint, f)


def load_checkpoint(path: str, device: str = "cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch's own warnings about a foreign file: our line below says it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refusal: all "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    vocab = checkpoint["vocab"]
    problem = misfit(checkpoint["model_args"], GPTConfig, "model_args", unknown_allowed=False) \
        or (not isinstance(checkpoint["config"], dict) and "its config is not a dict") \
        or (not isinstance(checkpoint["iter_num"], int) and f"its iter_num is {checkpoint['iter_num']!r}") \
        or (not (isinstance(vocab, dict) and isinstance(vocab.get("padded"), bool)
                 and (vocab.get("gpt2_ids") is None or isinstance(vocab["gpt2_ids"], list)))
            and "its vocab is not one this version reads")
    if problem:  # a newer or older version's checkpoint, or a damaged one: not a traceback later
        raise CheckpointError(f"{path} does not fit this version of the project ({problem})")
    return checkpoint


def misfit(values, config_class: type, what: str, unknown_allowed: bool) -> str | None:
    """The first way a checkpoint's `values` (its model_args, its config) do not fit the fields of
    config_class (a dataclass), in words; None if they fit. A name config_class does not have is a
    misfit unless unknown_allowed (a run's flag that this version dropped changes nothing)."""
    if not isinstance(values, dict):
        return f"its {what} is not a dict"
    known, hints = {f.name: f for f in fields(config_class)}, typing.get_type_hints(config_class)
    for name, value in values.items():
        if name not in known:
            if unknown_allowed:
                continue
            return f"its {what} has {name!r}, which this version does not know"
        types = typing.get_args(hints[name]) or (hints[name],)
        if not (isinstance(value, tuple(t for t in types if isinstance(t, type)))
                or (float in types and isinstance(value, int))):
            return f"its {what}'s {name} is {value!r}"
    needed = [name for name, f in known.items() if f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING and name not in values]
    return f"its {what} has no {needed[0]}" if needed else None




def load_weights(model: GPT, weights: dict) -> None:
    """Load a checkpoint's weights into `model`: every tensor must fit, with one exception, handled
    here: a model with a value head accepts weights without one (an MLE run, GPT-2), and its head
    keeps its zero initialisation. CheckpointError, in one line, for anything else that does not fit."""
    own = model.state_dict()
    wrong = [k for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"the checkpoint's {wrong[0]} is {tuple(weights[wrong[0]].shape)}, this model's "
                              f"{tuple(own[wrong[0]].shape)}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("value_head.")]
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's weights do not fit this model (missing "
                              f"{', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'})")


def model_from_checkpoint(checkpoint: dict) -> GPT:
    """The model a checkpoint describes (model_args), with its weights."""
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    load_weights(model, checkpoint["model"])
    return model


def build_model(c, vocab: Vocab, source: dict | None) -> GPT:
    """The model a run's configuration describes (block_size, n_layer, n_head, n_embd, dropout,
    value_head) over `vocab`, with the weights of `source` (a checkpoint) if there is one. What no
    flag sets (GPT-2's biases and GELU) is the source's. A vocabulary grown from the source's
    (data._vocab_for) keeps each old token's row; a new token's row starts at the mean of the
    source's rows, so its logit starts at about the average one (Hewitt, 2021)."""
    flags = dict(vocab_size=vocab.size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                 n_embd=c.n_embd, dropout=c.dropout, value_head=c.value_head)
    model = GPT(GPTConfig(**{**(source["model_args"] if source else {}), **flags}))
    if source:
        load_weights(model, grown_rows(source["model"], Vocab.from_state(source["vocab"]), vocab))
    return model


def grown_rows(weights: dict, old: Vocab, new: Vocab) -> dict:
    """The weights with the (tied) token table re-indexed from the old vocabulary to the new one."""
    if new.gpt2_ids is None or new.gpt2_ids == old.gpt2_ids:
        return weights
    table = weights["wte.weight"]
    rows = {g: i for i, g in enumerate(old.gpt2_ids)}
    index = torch.tensor([rows.get(g, -1) for g in new.gpt2_ids])
    grown = torch.cat([table, table.mean(0, keepdim=True)])[index]   # -1: the appended mean row
    return {**weights, "wte.weight": grown, "lm_head.weight": grown}


def write_checkpoint(checkpoint: dict, out_dir: str, also_best: bool, rank: int, world: int, device: str) -> None:
    """Rank 0 writes out_dir/ckpt.pt (and best.pt) with save_checkpoint. If that fails, every
    process raises WriteError (rank 0's says why and what is kept) and the run stops: a run that
    cannot save would only lose more work."""
    failure = None
    if rank == 0:
        for path in [checkpoint_path(out_dir)] + [best_path(out_dir)] * also_best:
            existed = os.path.isfile(path)
            try:
                save_checkpoint(checkpoint, path)
            except WriteError as e:
                kept = "the previous one is kept" if existed else "there was none before"
                failure = (f"{e} at iter {checkpoint['iter_num']}; {kept}"
                           + (f" ({checkpoint_path(out_dir)} is saved)" if path == best_path(out_dir) else "")
                           + "; stopping: make room or fix permissions, then "
                           + ("--resume" if os.path.exists(checkpoint_path(out_dir)) else "start it again"))
                break
    if agreed([float(failure is not None)], device, world)[0]:
        raise WriteError(failure or "rank 0 could not write the checkpoint")


def training_checkpoint(model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batches, *,
                        config, vocab: Vocab, iter_num: int, best_val_loss: float, **extra) -> dict:
    """One checkpoint holds what sample.py needs to rebuild the model and its data (weights,
    model_args, config, vocab, data_spec), and what --resume needs to continue bit for bit
    (RESUME_KEYS: optimizer and scaler state, data position, RNG states, best val loss), plus what
    a script adds in `extra` (online IQLearn: its current policy batch)."""
    return {"model": model.state_dict(), "model_args": dataclasses.asdict(model.config),
            "config": dataclasses.asdict(config), "vocab": vocab.state_dict(), "data_spec": data_spec(config),
            "iter_num": iter_num,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "data_position": batches.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "best_val_loss": best_val_loss, **extra}


def restore_training(checkpoint: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     batches) -> None:
    """Load a resumed checkpoint's optimizer, scaler, data position and RNG states."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    batches.load_state_dict(checkpoint["data_position"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


# What --resume needs beyond any checkpoint's weights and configuration.
RESUME_KEYS = ("optimizer", "scaler", "data_position", "rng", "best_val_loss")


def resumed_config(checkpoint: dict, config, given: set[str], fixed: tuple[str, ...], per_invocation: tuple[str, ...]):
    """A resumed run keeps its checkpoint's configuration, except the flags given now (`given`).
    Those that would change the model or its data (`fixed`) must agree with the checkpoint; those
    that say where and how this invocation runs (`per_invocation`: out_dir, device) are never
    the checkpoint's. A field the checkpoint's configuration does not have keeps its default."""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"the checkpoint cannot be resumed (it has no {', '.join(missing)})")
    problem = misfit(checkpoint["config"], type(config), "config", unknown_allowed=True)
    if problem:
        raise CheckpointError(f"the checkpoint cannot be resumed by this version ({problem})")
    names = {f.name for f in fields(config)}
    saved = {k: v for k, v in checkpoint["config"].items() if k in names and k not in per_invocation}
    for k in fixed:
        if k in given and getattr(config, k) != saved.get(k):
            raise UserError(f"{flag_of(type(config), k)} {getattr(config, k)} does not fit the checkpoint "
                            f"({saved.get(k)})")
    return dataclasses.replace(config, **{k: v for k, v in saved.items() if k not in given})


def what_is_kept(out_dir: str) -> str:
    """For a run that stops on an error: what its out_dir keeps, truthfully."""
    path = checkpoint_path(out_dir)
    return f"{path}, from before this, is kept" if os.path.exists(path) else "no checkpoint was saved yet"


# The fields of a run's configuration that fix its model's shape: --init_from sets them.
MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd")


# Which script resumes a checkpoint: its "algorithm" (train.py writes none).
RESUMED_BY = {None: "train.py", "gail": "gail.py"}


def starting_point(c, given: set[str], fixed: tuple[str, ...], per_invocation: tuple[str, ...],
                   algorithm: str | None = None) -> tuple[typing.Any, dict | None, dict | None]:
    """Where a run starts, for a configuration with out_dir, resume, init_from, value_head and the
    MODEL_FIELDS: the configuration it trains with, the checkpoint it resumes (or None), and the
    one whose weights and vocabulary it starts from: the resumed one, --init_from's, or None.
    `algorithm`: the checkpoint's "algorithm" this script resumes (None: train.py's); another
    script's checkpoint has other training state, so it is refused, naming the script that resumes
    it (its weights can still be an --init_from)."""
    ckpt_path = checkpoint_path(c.out_dir)
    if c.resume and c.init_from:
        raise UserError("--resume and --init_from exclude each other")
    if c.resume:  # (a resumed fine-tuning run's config names its --init_from: where it began)
        resumed = load_checkpoint(ckpt_path)
        if resumed.get("algorithm") != algorithm:
            other = RESUMED_BY.get(resumed.get("algorithm"), f"algorithm {resumed.get('algorithm')!r}")
            raise CheckpointError(f"{ckpt_path} is {other}'s checkpoint; resume it with {other}, or start "
                                  "a new --out_dir from its weights with --init_from")
        return resumed_config(resumed, c, given, fixed, per_invocation), resumed, resumed
    if os.path.exists(ckpt_path):
        raise UserError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                        "--out_dir (a new run would overwrite it)")
    if c.init_from:
        source = init_source(c.init_from, c.block_size)
        return adopt_architecture(c, given, source), None, source
    return c, None, None


def init_source(init_from: str, block_size: int) -> dict:
    """What --init_from names, as a checkpoint to start from: one of ours (a ckpt.pt path), or
    GPT-2's published weights and vocabulary (gpt2.py; the position table cropped to block_size)."""
    from gpt2 import GPT2_SIZES, gpt2_checkpoint  # here, not at the top: gpt2.py imports this module
    if init_from in GPT2_SIZES or os.path.isdir(init_from):
        return gpt2_checkpoint(init_from, block_size)
    if not os.path.isfile(init_from):
        raise CheckpointError(f"--init_from {init_from} is neither a checkpoint file, a GPT-2 "
                              f"({', '.join(GPT2_SIZES)}) nor a folder")
    return load_checkpoint(init_from)


def adopt_architecture(c, given: set[str], source: dict):
    """--init_from: the architecture is the source's (a flag that disagrees is an error). A value
    head can be added to a source without one (it starts at zero); a source's head stays."""
    args = source["model_args"]
    for k in MODEL_FIELDS:
        if k in given and getattr(c, k) != args[k]:
            raise UserError(f"{flag_of(type(c), k)} {getattr(c, k)} does not fit {c.init_from} ({args[k]})")
    return dataclasses.replace(c, **{k: args[k] for k in MODEL_FIELDS},
                               value_head=c.value_head or args.get("value_head", False))


# ----------------------------------------------------------------------------------------------
# One run per out_dir, and stop signals

def open_own_file(path: str, flags: int) -> int:
    """os.open for a file of a run's own in out_dir (the lock, the log), never through a link: a
    symlink planted at `path` is refused (O_NOFOLLOW), and so are a hard link (its other name
    would be written too) and anything but a regular file. OSError if so."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"{path} is a symbolic link, which a run never writes through") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise OSError(0, f"{path} is not a file of its own (a link or a special file was put there)")
    return fd


class OutDirLock:
    """An exclusive flock on out_dir/train.lock, which names the holder's pid, for the life of a run.
    The OS releases a flock when its process ends, however it ends, so a crash never leaves a stale
    lock; release() also removes the file."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, "train.lock")
        try:
            os.makedirs(out_dir, exist_ok=True)
            self._lock(out_dir)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except OSError as e:  # not a folder, no permission, a filesystem without locks, a planted link
            raise UserError(f"cannot lock --out_dir {out_dir} ({reason(e)})") from None

    def _lock(self, out_dir: str) -> None:
        while True:
            self.fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT)  # no truncation: a holder's pid stays
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(self.fd)
                raise UserError(f"{out_dir} is in use by another run (pid {holder}); wait for it to end "
                                "or choose another --out_dir") from None
            if self._still_there():
                return
            os.close(self.fd)  # its holder removed the file between our open and our lock: lock the new one

    def _still_there(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self.fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # while holding it: a run that opened this file sees it gone and retries
        os.close(self.fd)


@contextlib.contextmanager
def holding_out_dir(out_dir: str, rank: int, world: int, device: str):
    """Rank 0 holds out_dir's lock while the block runs. If another run holds it, every process
    raises UserError (rank 0's names that run's pid) before anything in out_dir is touched. Once
    it is held, no write of ours is under way there: the temporary files a killed one left are
    removed."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = OutDirLock(out_dir)
            for path in stale_temporaries(out_dir):
                os.remove(path)  # (a link planted under such a name: the link goes, not its target)
        except UserError as e:
            error = e
        except OSError as e:
            error = UserError(f"cannot clean up --out_dir {out_dir} ({reason(e)})")
    if agreed([float(error is not None)], device, world)[0]:
        if lock:
            lock.release()
        raise error or UserError(f"{out_dir} is in use by another run (rank 0 names it)")
    try:
        yield
    finally:
        if lock:
            lock.release()


# ----------------------------------------------------------------------------------------------
# The log: out_dir/log.jsonl, one JSON object per evaluation

def log_path(out_dir: str) -> str:
    return os.path.join(out_dir, "log.jsonl")


def start_log(out_dir: str, resumed_iter: int | None) -> None:
    """A fresh run starts an empty log (removing, not truncating, what is there: a link's target is
    never touched). A resumed run keeps the rows up to its checkpoint's iteration: later ones
    describe work the checkpoint does not hold (a run killed while saving after it logged), which
    the resumed run does again and logs again."""
    path = log_path(out_dir)
    try:
        if resumed_iter is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            os.close(open_own_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return
        try:
            with os.fdopen(open_own_file(path, os.O_RDONLY), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
    except OSError as e:  # a folder or a link where the log goes, no permission
        raise WriteError(f"could not write {path} ({reason(e)})") from None
    kept = [line for line in lines if logged_iter(line) is None or logged_iter(line) <= resumed_iter]
    if kept != lines or not os.path.exists(path):
        with replacing(path) as f:
            f.write("".join(line + "\n" for line in kept).encode())


def logged_iter(line: str) -> int | None:
    """The iteration a log line is for, or None for a line that is not a row of ours (kept as it is)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return row.get("iter") if isinstance(row, dict) and isinstance(row.get("iter"), int) else None


def append_log(out_dir: str, row: dict) -> None:
    """One row at the end of out_dir/log.jsonl (never written through a link); WriteError if it
    cannot be."""
    try:
        fd = open_own_file(log_path(out_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:
        raise WriteError(f"could not write {log_path(out_dir)} at iter {row.get('iter')} ({reason(e)})") from None


