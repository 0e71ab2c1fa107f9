"""Running the registry: each run is `python <script> <flags> --out_dir runs/<name>`, then
`python sample.py --out_dir runs/<name> <evaluation flags>`, one thread each, `jobs` side by side.
What a report needs is kept in results/<name>/: the log, the evaluation and run.json (how, where,
on how loaded a machine, and from which code it was made)."""

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from errors import UserError
from lab import registry
from lab.registry import Evaluation, Group, Run
from lab.results import facts_of, log_of

THREADS = 1   # per run (registry.Run.threads): runs side by side share the cores instead
UNKNOWN = "unknown"
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def lock_of(name: str) -> threading.Lock:
    """One lock per run: two jobs that need the same base run train it once, one after the other."""
    with _locks_lock:
        return _locks.setdefault(name, threading.Lock())


def iteration_of(run: Run) -> int | None:
    """The iteration runs/<name>/ckpt.pt was saved at (None: no checkpoint yet)."""
    path = os.path.join(registry.RUNS, run.name, "ckpt.pt")
    if not os.path.exists(path):
        return None
    from runfiles import load_checkpoint   # torch: only when a checkpoint is there to read
    return load_checkpoint(path)["iter_num"]


def child(command: list[str], name: str, threads: int, **options) -> subprocess.CompletedProcess:
    """Run a script of the project on `threads` threads; its failure is a UserError with the
    script's own last line (its one-line reason), not a traceback of this runner."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, *command[1:]], env=env, **options)
    if result.returncode:
        if result.stdout is None:   # the output went to runs/<name>.log
            with open(os.path.join(registry.RUNS, f"{name}.log"), errors="replace") as f:
                output = f.read()
        else:
            output = result.stdout + result.stderr
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "(no output)")
        raise UserError(f"{name}: `{' '.join(command[:2])}` exited {result.returncode}: {last.strip()}")
    return result


def train_run(run: Run) -> dict:
    """Train one run into runs/<name> to its last iteration (an interrupted run is resumed; a
    finished one is left alone). A run that starts from another's checkpoint trains that one to
    completion first, once however many jobs need it, and refuses it unfinished. Returns what the
    provenance records: the command as run, its wall time, whether it resumed, the base's iteration."""
    with lock_of(run.name):
        facts = {}
        if run.base:
            train_run(run.base)
            done = iteration_of(run.base)
            if done is None or done < run.base.max_iters:
                raise UserError(f"{run.name}: its base run {run.base.name} is unfinished (iteration {done} of "
                                f"{run.base.max_iters}); it is not used as a starting point")
            facts = {"base": run.base.name, "base_iteration": done}
        out = os.path.join(registry.RUNS, run.name)
        planned = command = ["python", run.script, *run.flags, "--out_dir", out]
        done = iteration_of(run)
        if done is not None and run.max_iters is not None and done >= run.max_iters:
            return {"train_command": " ".join(planned), "already_trained_to": done, **facts}
        if done is not None:   # the checkpoint holds the flags; only how far to train is given again
            length = ["--max_iters", str(run.max_iters)] if run.max_iters else []
            command = ["python", run.script, "--resume", *length, "--out_dir", out]
        print(f"== {run.name}: {' '.join(command)}", flush=True)
        began = time.time()
        os.makedirs(registry.RUNS, exist_ok=True)
        with open(os.path.join(registry.RUNS, f"{run.name}.log"), "a") as log:
            child(command, run.name, run.threads, stdout=log, stderr=subprocess.STDOUT)
        return {"train_command": " ".join(planned), "train_seconds": round(time.time() - began, 1),
                "train_resumed": done is not None, **({"resumed_with": " ".join(command)} if done is not None else {}),
                **facts}


def train_and_evaluate(run: Run, evaluation: Evaluation, jobs: int = 1) -> None:
    """Train (if needed) and evaluate one run. A run whose result is in results/ is skipped."""
    kept = os.path.join(registry.RESULTS, run.name)
    if os.path.exists(os.path.join(kept, evaluation.result_file)):
        return
    at_start = {"threads": run.threads, "side_by_side": jobs, "load_average_at_start": load_average(),
                "busy_at_start": busy_processes()}
    trained = train_run(run)
    out = os.path.join(registry.RUNS, run.name)
    command = ["python", "sample.py", "--out_dir", out, *evaluation.flags]
    began = time.time()
    result = child(command, run.name, run.threads, capture_output=True, text=True)
    os.makedirs(kept, exist_ok=True)
    if os.path.exists(os.path.join(kept, "log.jsonl")):   # evaluated a second way: the kept log stays
        trained["log_equals_kept"] = ("not retrained (its checkpoint was already finished): nothing compared"
                                      if "already_trained_to" in trained else same_log(run.name)["log_equal"])
    else:
        shutil.copyfile(os.path.join(out, "log.jsonl"), os.path.join(kept, "log.jsonl"))
    with open(os.path.join(kept, evaluation.result_file), "w") as f:
        f.write(result.stdout)
    write_provenance(run.name, {**trained, "sample_command": " ".join(command),
                                "eval_seconds": round(time.time() - began, 1), **at_start}, evaluation.result_file)


def run_group(group: Group, jobs: int) -> None:
    """Every run of a group, `jobs` side by side; the first failure cancels the runs not yet begun
    and is raised once the running ones have finished."""
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(train_and_evaluate, run, group.evaluation, jobs) for run in group.runs]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


TIMING_KEYS = ("update_ms", "sample_ms")   # a log's wall-clock fields: they differ on every rerun


def same_log(name: str) -> dict:
    """Does runs/<name>/log.jsonl (retrained) reproduce the kept results/<name>/log.jsonl: every
    number the kept log has, timings aside? (A key logged only since it was kept is not compared.)"""
    new, kept = log_of(name, registry.RUNS), log_of(name)
    compared = lambda e, keys: {k: e.get(k) for k in keys if k not in TIMING_KEYS}
    check = {"name": name, "log_equal": len(new) == len(kept)
             and all(compared(e, was) == compared(was, was) for e, was in zip(new, kept))}
    if not check["log_equal"]:
        check["kept_last"] = {k: kept[-1].get(k) for k in ("iter", "val_nll", "accuracy")}
        check["retrained_last"] = {k: new[-1].get(k) for k in ("iter", "val_nll", "accuracy")}
    return check


# ----------------------------------------------------------------------------------------------
# Provenance: results/<name>/run.json says how, where and from which code a run was made, and how
# busy the machine was (a run slowed by other work shows it: its ms/iter are not the method's).

def git(*args: str) -> str:
    try:
        # (only the trailing newline goes: `git status --porcelain` lines begin with a space)
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.rstrip("\n")
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def load_average() -> list[float] | str:
    """Runnable processes averaged over the last 1, 5 and 15 minutes (2 on 2 cores: both busy)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else UNKNOWN


def busy_processes() -> list[str] | str:
    """The other processes running or waiting for a core at this instant (state R in /proc)."""
    if not os.path.isdir("/proc"):
        return UNKNOWN
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:   # gone meanwhile
            continue
        if stat[stat.rindex(")") + 2] == "R" and int(pid) != os.getpid():
            found.append(f"{stat[stat.index('(') + 1:stat.rindex(')')]} (pid {pid})")
    return found


def machine() -> dict:
    """This machine and code, as a run made now records them."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = UNKNOWN
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": UNKNOWN if changed == UNKNOWN else [line[3:] for line in changed.splitlines()],
            "torch": torch_version, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "load_average_at_end": load_average(),
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_provenance(name: str, facts: dict, result_file: str = "eval.json") -> None:
    """results/<name>/run.json. A run evaluated a second way (a fine-tuned run's frontier.json
    beside its eval.json) keeps the first record and gains the second under the result's name."""
    path = os.path.join(registry.RESULTS, name, "run.json")
    record = {"name": name, **facts, **machine()}
    if result_file != "eval.json" and os.path.exists(os.path.join(registry.RESULTS, name, "eval.json")) \
            and os.path.exists(path):
        record = {**facts_of(name), result_file: record}
    with open(path, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")


def provenance(name: str) -> str:
    """results/<name>/run.json as aligned lines; `name` must be a run kept in results/."""
    kept = sorted(os.listdir(registry.RESULTS)) if os.path.isdir(registry.RESULTS) else []
    if name not in kept or not facts_of(name):
        raise UserError(f"no run.json for {name!r}: --provenance takes the name of a run kept in "
                        f"{registry.RESULTS}/ (e.g. {kept[0] if kept else 'sweep_lam0_s1'})")
    facts = facts_of(name)
    width = max(map(len, facts))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in facts.items())
