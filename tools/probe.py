"""Probe every script with hostile input and faults, as a user or a neighbour on a shared machine
could (issue 30): bad data files, bad flags, checkpoints of other scripts and other versions,
planted links, a full disk, and stop signals at every phase of a run (setup, the first iteration,
an evaluation, a save, the last iteration), each followed by --resume. Not part of the suite (it
takes minutes); tests/test_faults.py keeps the probes that found defects.

    python tools/probe.py                  # every probe, a table at the end (markdown)
    python tools/probe.py --only signal    # the probes whose name contains 'signal'

Each probe runs a script in a subprocess and is judged on what the promise says: the exit code
expected, no traceback, at most one line of error (progress bars and notes aside), and where a
probe says so, what it left behind (a victim file untouched, a log with every row, no temporary
file). The table lists the command, the exit code, the last line the script printed, the verdict.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--block_size", "96",
        "--task_train", "200", "--eval_problems", "2", "--eval_iters", "1", "--warmup_iters", "0"]
RUN = [*TINY, "--max_iters", "4", "--eval_interval", "2"]
PROGRESS = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")

# A script run in-process with one function wrapped: on its n-th call the process sends itself a
# signal (before or after the call), or is killed (SIGKILL) inside it.
HOOK = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if the probe runs in the background
sys.path.insert(0, {root!r})
import importlib
owner = importlib.import_module({module!r})
for part in {path!r}[:-1]:
    owner = getattr(owner, part)
real, calls = getattr(owner, {path!r}[-1]), []
def wrapped(*args, **kwargs):
    calls.append(1)
    hit = len(calls) == {n}
    if hit and {before}:
        os.kill(os.getpid(), {signum})
    out = real(*args, **kwargs)
    if hit and not {before}:
        os.kill(os.getpid(), {signum})
    return out
setattr(owner, {path!r}[-1], wrapped)
script = importlib.import_module({script!r})
sys.exit(script.main(sys.argv[2:]))  # (sys.argv[1]: the script's file, for the table)
"""


def hooked(script: str, target: str, n: int, signum: int, args: list[str], before: bool = False) -> list[str]:
    module, _, attr = target.partition(":")
    code = HOOK.format(root=ROOT, module=module, path=attr.split("."), n=n, before=before, signum=int(signum),
                       script=script)
    return [PY, "-c", code, f"{script}.py", *args]


FULL_DISK = """
import resource, signal, sys, runpy
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def full_disk(limit: int, script: str, args: list[str]) -> list[str]:
    return [PY, "-c", FULL_DISK.format(limit=limit), script, *args]


# ----------------------------------------------------------------------------------------------
# The scratch folder: data files, runs to start from, checkpoints of other versions

def prepare(s: str) -> None:
    os.makedirs(f"{s}/data")
    good = [{"prompt": f"What is {i} plus 1?\n", "response": f"#### {i + 1}"} for i in range(40)]
    files = {
        "good.jsonl": good,
        "empty_prompts.jsonl": [{"prompt": "", "response": r["response"]} for r in good],
        "one.jsonl": good[:1],
        "too_long.jsonl": [{"prompt": "word " * 200, "response": "#### 1"}] * 5,
    }
    for name, records in files.items():
        with open(f"{s}/data/{name}", "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    lines = "".join(json.dumps(r) + "\n" for r in good[:5])
    raw = {
        "bom.jsonl": ("\ufeff" + lines).encode(),
        "crlf.jsonl": lines.replace("\n", "\r\n").encode(),
        "list.jsonl": lines.encode() + b"[1, 2]\n",
        "number_prompt.jsonl": lines.encode() + b'{"prompt": 3, "response": "x"}\n',
        "surrogate.jsonl": lines.encode() + b'{"prompt": "a\\ud800", "response": "#### 1"}\n',
        "nul.jsonl": lines.encode() + b'{"prompt": "a\\u0000b", "response": "#### 1"}\n',
        "latin1.jsonl": lines.encode() + '{"prompt": "caf\u00e9", "response": "#### 1"}\n'.encode("latin-1"),
        "deep.jsonl": lines.encode() + b"[" * 200000 + b"\n",
        "bigint.jsonl": lines.encode() + b'{"prompt": "a", "response": ' + b"9" * 5000 + b"}\n",
        "nan.jsonl": lines.encode() + b'{"prompt": NaN, "response": "x"}\n',
        "whitespace.txt": b"   \n\t\n",
        "tiny.txt": b"a",
        "text.txt": ("To be, or not to be, that is the question. " * 60).encode(),
        "data.csv": b"prompt,response\n",
    }
    for name, content in raw.items():
        with open(f"{s}/data/{name}", "wb") as f:
            f.write(content)
    os.mkdir(f"{s}/data/folder.jsonl")
    os.mkfifo(f"{s}/data/fifo.jsonl")
    with open(f"{s}/prompt_latin1.txt", "wb") as f:
        f.write("caf\u00e9".encode("latin-1"))
    with open(f"{s}/victim", "w") as f:
        f.write("precious\n")
    for cmd in ([PY, "train.py", *TINY, "--max_iters", "2", "--eval_interval", "2", "--lambda", "0",
                 "--out_dir", f"{s}/base"],
                [PY, "gail.py", *TINY, "--init_from", f"{s}/base/ckpt.pt", "--max_iters", "1", "--out_dir", f"{s}/gail"],
                [PY, "train.py", *TINY, "--max_iters", "1", "--full_vocab", "--out_dir", f"{s}/full"]):
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    base = torch.load(f"{s}/base/ckpt.pt", weights_only=True)
    versions = {  # what another version of the project might have written
        "new_model_field": lambda c: c["model_args"].update(rotary=True),
        "old_vocab": lambda c: c["vocab"].pop("padded"),
        "config_type": lambda c: c["config"].update(n_layer="two"),
        "no_rng": lambda c: c.pop("rng"),
        "no_policy_batches": lambda c: c.pop("policy_batches"),
        "unknown_config_field": lambda c: c["config"].update(flag_of_the_future=1),
        "past_max_iters": lambda c: c.update(iter_num=10**6),
    }
    for name, change in versions.items():
        checkpoint = torch.load(f"{s}/base/ckpt.pt", weights_only=True)
        change(checkpoint)
        os.makedirs(f"{s}/v_{name}")
        torch.save(checkpoint, f"{s}/v_{name}/ckpt.pt")
    with open(f"{s}/evil.pt", "wb") as f:  # a pickle that would run a command if loaded unsafely
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {s}/pwned",))
        pickle.dump({"model": Evil()}, f)
    torch.save({"model": base["model"]}, f"{s}/weights_only.pt")
    os.makedirs(f"{s}/not_hf")


# ----------------------------------------------------------------------------------------------
# Checks of what a probe left behind (each returns "" if fine, else what is wrong)

def victim_intact(s):
    return "" if open(f"{s}/victim").read() == "precious\n" else "the victim file was written through a link"


def log_iters(out):
    return [json.loads(line)["iter"] for line in open(f"{out}/log.jsonl")]


def resumed(script, out, iters, *extra):
    """Resume out_dir; then its log must hold exactly `iters` and no temporary file may be left."""
    def check(s):
        proc = subprocess.run([PY, script, "--resume", "--out_dir", f"{s}/{out}", *extra], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return f"--resume exited {proc.returncode}: {last_line(proc)}"
        names = sorted(os.listdir(f"{s}/{out}"))
        if [n for n in names if n.endswith(".tmp")]:
            return f"temporary files left: {names}"
        got = log_iters(f"{s}/{out}")
        return "" if got == iters else f"log iters after --resume {got}, expected {iters}"
    return check


def nothing_left(folder):
    def check(s):
        left = [n for n in os.listdir(f"{s}/{folder}") if n.endswith(".tmp") or n.startswith(".export")]
        return f"left behind: {left}" if left else ""
    return check


def no_file(path):
    return lambda s: f"{path} exists" if os.path.exists(f"{s}/{path}") else ""


# ----------------------------------------------------------------------------------------------
# The probes: (name, command, expected exit codes, check)

def probes(s: str) -> list[tuple]:
    d, base, ckpt = f"{s}/data", f"{s}/base", f"{s}/base/ckpt.pt"
    train = lambda out, *a: [PY, "train.py", *RUN, "--out_dir", f"{s}/{out}", *map(str, a)]  # noqa: E731
    gail = lambda out, *a: [PY, "gail.py", *RUN, "--init_from", ckpt, "--out_dir", f"{s}/{out}",  # noqa: E731
                            *map(str, a)]
    sample = lambda *a: [PY, "sample.py", "--out_dir", base, "--num_samples", "1", "--max_new_tokens", "8",  # noqa: E731
                         *map(str, a)]
    T, G = signal.SIGTERM, signal.SIGINT
    out = []
    add = lambda name, cmd, codes=(2,), check=None: out.append((name, cmd, codes, check))  # noqa: E731

    # data files
    for name, msg_codes in [("bom", (0,)), ("crlf", (0,)), ("list", (2,)), ("number_prompt", (2,)),
                            ("surrogate", (0, 2)), ("nul", (0,)), ("latin1", (2,)), ("deep", (2,)), ("bigint", (2,)),
                            ("nan", (2,)), ("folder", (2,)), ("fifo", (2,)), ("one", (2,)), ("too_long", (2,)),
                            ("empty_prompts", (0,))]:
        add(f"data {name}", train(f"d_{name}", "--data", f"{d}/{name}.jsonl", "--max_iters", 2), msg_codes)
    for name in ("whitespace.txt", "tiny.txt", "data.csv"):
        add(f"data {name}", train(f"d_{name}", "--data", f"{d}/{name}"))
    add("data text + --mixin", train("d_text", "--data", f"{d}/text.txt", "--mixin", 0.5, "--gamma", 0.9,
                                     "--max_iters", 2), (0,))
    add("data --val_data missing", train("d_val", "--data", f"{d}/good.jsonl", "--val_data", f"{d}/nope.jsonl"))
    add("gail data empty prompts", [PY, "gail.py", *RUN, "--data", f"{d}/empty_prompts.jsonl", "--out_dir",
                                    f"{s}/g_empty"], (0,))

    # flags
    for flags in (["--batch_size", 0], ["--block_size", 1], ["--eval_interval", 0], ["--dropout", 1],
                  ["--min_lr", 0], ["--lambda", "inf"], ["--gamma", -0.1], ["--n_head", 0], ["--max_iters", -5],
                  ["--task_steps", 9], ["--task_max_value", 0], ["--grad_clip", "nan"], ["--entropy_coef=-inf"],
                  ["--seed", 2**64], ["--device", "cuda"], ["--device", "meta"], ["--device", "cuda:7"],
                  ["--dtype", "float64"], ["--resume", "--init_from", ckpt], ["--out_dir", f"{s}/victim"],
                  ["--out_dir", f"{s}/victim/sub"], ["--learning_rate", "1e400"], ["--keep_best", "--resume"]):
        add(f"flags {' '.join(map(str, flags))}", [PY, "train.py", *RUN, "--out_dir", f"{s}/f", *map(str, flags)])
    add("flags --dtype float16 on CPU", train("f16", "--dtype", "float16", "--max_iters", 1), (0,))
    add("gail --disc_steps 0", gail("gf", "--disc_steps", 0))
    add("gail --kl_coef inf", gail("gf", "--kl_coef", "inf"))
    add("gail --seed -1", gail("gf", "--seed", -1))

    # checkpoints of other scripts and other versions
    for name, codes in [("new_model_field", (2,)), ("old_vocab", (2,)), ("config_type", (2,)), ("no_rng", (2,)),
                        ("no_policy_batches", (0,)), ("unknown_config_field", (0,)), ("past_max_iters", (0,))]:
        add(f"resume version {name}", [PY, "train.py", "--resume", "--max_iters", "3", "--out_dir", f"{s}/v_{name}"],
            codes)
    add("sample version new_model_field", [PY, "sample.py", "--out_dir", f"{s}/v_new_model_field"])
    add("train --resume gail ckpt", [PY, "train.py", "--resume", "--out_dir", f"{s}/gail"])
    add("gail --resume train ckpt", [PY, "gail.py", "--resume", "--out_dir", base])
    add("train --init_from gail ckpt", [PY, "train.py", *TINY, "--max_iters", "1", "--init_from",
                                        f"{s}/gail/ckpt.pt", "--out_dir", f"{s}/from_gail"], (0,))
    add("train --init_from evil pickle", train("evil", "--init_from", f"{s}/evil.pt"), (2,), no_file("pwned"))
    add("train --init_from weights only", train("wo", "--init_from", f"{s}/weights_only.pt"))
    add("train --init_from folder not HF", train("nohf", "--init_from", f"{s}/not_hf"))
    add("train --init_from a data file", train("df", "--init_from", f"{d}/good.jsonl"))
    add("gail --init_from other data", gail("gv", "--task_max_value", 80))
    add("gail --disc_n_embd 36 on 2 heads", [PY, "gail.py", "--init_from", ckpt, "--task_train", "200",
                                             "--max_iters", "1", "--batch_size", "4", "--eval_problems", "0",
                                             "--eval_iters", "1", "--disc_n_embd", "36", "--out_dir", f"{s}/gd"], (0,))

    # sample.py, export.py, bench.py, toy_mdp.py, hf_iqlearn.py
    add("sample --top_k 100000", sample("--top_k", 100000), (0,))
    add("sample --temperature 1e-30", sample("--temperature", "1e-30"), (0,))
    add("sample --start ''", sample("--start", ""), (0,))
    add("sample --start FILE latin-1", sample("--start", f"FILE:{s}/prompt_latin1.txt"))
    add("sample --start FILE folder", sample("--start", f"FILE:{d}/folder.jsonl"))
    add("sample --device meta", sample("--device", "meta"))
    add("sample --seed 2**70", sample("--seed", 2**70))
    add("sample --rewards on gail", [PY, "sample.py", "--out_dir", f"{s}/gail", "--rewards"])
    add("sample --split test on text", [PY, "sample.py", "--out_dir", f"{s}/d_text", "--split", "test"])
    add("export compact vocab", [PY, "export.py", "--out_dir", base])
    add("export --hf_dir is a file", [PY, "export.py", "--out_dir", f"{s}/full", "--hf_dir", f"{s}/victim"])
    add("export full disk", full_disk(2**20, "export.py", ["--out_dir", f"{s}/full", "--hf_dir", f"{s}/hf_full",
                                                          "--no_check"]), (1,), nothing_left("."))
    add("bench --steps 0", [PY, "bench.py", "--steps", "0"])
    add("bench algorithms evil pickle", [PY, "bench.py", "algorithms", "--init_from", f"{s}/evil.pt"])
    add("toy_mdp --plot missing folder", [PY, "toy_mdp.py", "--plot", f"{s}/nope/toy.png"])
    add("hf_iqlearn --model missing", [PY, "examples/hf_iqlearn.py", "--model", f"{s}/nope"])
    add("hf_iqlearn --model not HF", [PY, "examples/hf_iqlearn.py", "--model", f"{s}/not_hf"])
    add("hf_iqlearn --seed -1", [PY, "examples/hf_iqlearn.py", "--seed", "-1"])

    # planted files in out_dir
    add("planted train.lock -> victim", train("p_lock", "--max_iters", 1), (2,), victim_intact)
    add("planted log.jsonl -> victim", train("p_log", "--max_iters", 2), (0,), victim_intact)
    add("planted ckpt.pt.tmp -> victim", train("p_tmp", "--max_iters", 2), (0,), victim_intact)
    add("planted train.lock fifo", train("p_fifo", "--max_iters", 1))
    add("planted log.jsonl folder", train("p_logdir", "--max_iters", 1), (1,))
    add("planted best.pt folder", train("p_best", "--max_iters", 2, "--keep_best"), (1,))

    # full disk
    add("full disk at the first save", full_disk(65536, "train.py", RUN + ["--out_dir", f"{s}/disk"]), (1,),
        nothing_left("disk"))
    add("full disk at a later save", full_disk(65536, "train.py", ["--resume", "--max_iters", "4", "--out_dir", f"{s}/disk2"]), (1,),
        nothing_left("disk2"))

    # signals at every phase, each followed by --resume (log rows 2 and 4, nothing left behind)
    phases = [("setup", "train:setup", 1, False), ("first iteration", "data:Batches.next", 1, True),
              ("evaluation", "train:val_metrics", 1, True), ("save", "torch:save", 1, True),
              ("last iteration", "data:Batches.next", 4, True)]
    for phase, target, n, before in phases:
        for signum in (T, G):
            name = f"s_{phase.replace(' ', '_')}_{signum.name}"
            add(f"signal {signum.name} at {phase}", hooked("train", target, n, signum, [*RUN, "--out_dir", f"{s}/{name}"],
                                                          before), (128 + signum,), resumed("train.py", name, [2, 4]))
    add("signal SIGTERM at last iteration --keep_best",
        hooked("train", "data:Batches.next", 4, T, [*RUN, "--keep_best", "--out_dir", f"{s}/s_best"], True), (143,),
        lambda s_: resumed("train.py", "s_best", [2, 4])(s_)
        or ("" if os.path.exists(f"{s_}/s_best/best.pt") else "no best.pt after --resume"))
    add("signal SIGKILL mid-save", hooked("train", "torch:save", 2, signal.SIGKILL,
                                          [*RUN, "--out_dir", f"{s}/s_kill"]), (-9,), resumed("train.py", "s_kill", [2, 4]))
    for phase, target, n in [("gail sampling", "gail:policy_samples", 3), ("gail evaluation", "gail:val_metrics", 1),
                             ("gail last iteration", "gail:policy_samples", 4)]:
        name = f"s_{phase.replace(' ', '_')}"
        add(f"signal SIGTERM at {phase}", hooked("gail", target, n, T, [*RUN, "--init_from", ckpt, "--out_dir",
                                                                       f"{s}/{name}"], True),
            (143,), resumed("gail.py", name, [2, 4]))
    add("signal SIGINT in sample.py", hooked("sample", "sample:score", 1, G, ["--out_dir", base, "--eval",
                                                                               "--num_problems", "2"]), (130,))
    add("signal SIGINT while exporting", hooked("export", "export:readable_as_umask_says", 1, G,
                                                ["--out_dir", f"{s}/full", "--hf_dir", f"{s}/hf_int", "--no_check"]),
        (130,), nothing_left("."))
    return out


def plant(s: str) -> None:
    """The files a neighbour plants before the planted-file probes run."""
    for out, name, kind in [("p_lock", "train.lock", "link"), ("p_log", "log.jsonl", "link"),
                            ("p_tmp", "ckpt.pt.tmp", "link"), ("p_fifo", "train.lock", "fifo"),
                            ("p_logdir", "log.jsonl", "dir"), ("p_best", "best.pt", "dir")]:
        os.makedirs(f"{s}/{out}", exist_ok=True)
        path = f"{s}/{out}/{name}"
        {"link": lambda p: os.symlink(f"{s}/victim", p), "fifo": os.mkfifo, "dir": os.mkdir}[kind](path)
    subprocess.run([PY, "train.py", *RUN, "--max_iters", "2", "--out_dir", f"{s}/disk2"], cwd=ROOT, check=True,
                   capture_output=True)  # resumed to 4 on a full disk: the save at 4 fails


def last_line(proc) -> str:
    text = proc.stderr.strip() or proc.stdout.strip()
    lines = [line for chunk in text.splitlines() for line in [chunk.split("\r")[-1]] if line.strip()]
    return lines[-1] if lines else ""


def judge(proc, codes, check, s) -> str:
    if proc.returncode not in codes:
        return f"FAIL: exit {proc.returncode}, expected {'/'.join(map(str, codes))}"
    if "Traceback" in proc.stderr:
        return "FAIL: traceback"
    errors = [line for line in proc.stderr.splitlines() if line.strip() and not PROGRESS.search(line)
              and not line.startswith("note:")]
    if proc.returncode != 0 and len(errors) > 1:
        return f"FAIL: {len(errors)} lines of error"
    problem = check(s) if check else ""
    return f"FAIL: {problem}" if problem else "ok"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="run the probes whose name contains this")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(ROOT, "..", "shared", "tiktoken_cache"))
    s = tempfile.mkdtemp(prefix="probe-")
    began = time.time()
    try:
        prepare(s)
        plant(s)
        rows = []
        for name, cmd, codes, check in probes(s):
            if args.only not in name:
                continue
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
            shown = " ".join(map(str, cmd[3:] if cmd[1] == "-c" else cmd[1:])).replace(s, "S")
            if cmd[1] == "-c":  # a hooked run (the probe's name says where the signal comes) or a limited one
                shown = f"[{'RLIMIT_FSIZE' if 'RLIMIT_FSIZE' in cmd[2] else 'hooked'}] {shown}"
            verdict = judge(proc, codes, check, s)
            rows.append((name, shown, proc.returncode, last_line(proc).replace(s, "S"), verdict))
            print(f"{verdict:<6} {name}: exit {proc.returncode}: {rows[-1][3][:150]}", file=sys.stderr, flush=True)
        print("| probe | command | exit | last line | verdict |\n|---|---|---|---|---|")
        for name, shown, code, line, verdict in rows:
            cell = lambda t: t.replace("|", "\\|")[:220]  # noqa: E731
            print(f"| {cell(name)} | `{cell(shown)}` | {code} | {cell(line)} | {verdict} |")
        failed = sum(not r[4].startswith("ok") for r in rows)
        print(f"\n{len(rows)} probes, {failed} failed, {time.time() - began:.0f} s (S = the scratch folder)")
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(s, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
