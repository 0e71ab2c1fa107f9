"""Mutation testing for this repository: a small AST-based runner (a development tool, not used by CI).

    python tools/mutate.py --list                       # the mutants, without running anything
    python tools/mutate.py                              # every target; one mutant at a time
    python tools/mutate.py --file iqlearn.py --json mutants.jsonl
    python tools/mutate.py --rerun mutants.jsonl        # only the survivors of an earlier run
    python tools/mutate.py --show 'metrics.py:spearman:3'  # the diff of one mutant

For each target function (TARGETS below) it makes one small change at a time (an operator, a
comparison, a constant, a name such as max/min, a deleted call statement, two dict values or two
returned values swapped), writes the changed file into a scratch copy of the repository, and runs
the narrowest pytest selection that covers that function there, with a timeout. A mutant is
*killed* when the selection fails (or errors, or times out), *survived* when it passes. The
selection must pass on the unchanged code first.

Speed: torch, numpy and pytest are imported once; each mutant runs in a fork (no re-import), with
one thread, `-x` (stop at the first failure) and no bytecode caching (a same-size change within one
second would otherwise reuse a stale .pyc). Run it with `nice -n 19` on a shared machine.
"""

import argparse
import ast
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# file -> [(function qualnames, pytest arguments)]. A function's mutants run against its selection.
T_IQ = ["tests/test_iqlearn.py"]
T_DATA = ["tests/test_data.py", "-k", "masks or cut_row or text_windows or collate or batches or answer"]
T_METRICS = ["tests/test_metrics.py"]
T_TASK = ["tests/test_task.py"]
T_BEAM = ["tests/test_sample.py", "tests/test_decoding.py", "-k", "beam"]
T_SCORE = ["tests/test_sample.py", "tests/test_decoding.py", "-k", "score or telescopes or beam_search_log_probs or reward"]
T_VIEWER = ["tests/test_sample.py", "tests/test_decoding.py", "-k", "reward_viewer or token_label or show_rewards"]
T_EVAL = ["tests/test_sample.py", "tests/test_decoding.py", "-k", "evaluate or eval_json or distinct_2 or greedy_accuracy"]
T_GREEDY = ["tests/test_sample.py", "tests/test_decoding.py", "-k", "greedy_accuracy or evaluate"]
T_MODEL = ["tests/test_model.py", "tests/test_decoding.py", "-k",
           "cache or left_pad or reorder or generate or sampling or sample_next or eos or positions"]
T_LR = ["tests/test_train.py", "-k", "lr_ or flags_set"]
T_POLICY = ["tests/test_data.py", "-k", "policy_samples"]
T_LOSS = ["tests/test_train.py", "-k", "entropy or closing_eos or loss_assembly or online_training"]
T_VAL = ["tests/test_train.py", "tests/test_sample.py", "-k", "log_is_written or greedy_accuracy or val_metrics"]
T_RESUME = ["tests/test_train.py", "-k", "resume or ctrl_c or bad_checkpoint or init_from or value_head"]
T_FLAGS = ["tests/test_runtime.py", "tests/test_train.py", "tests/test_faults.py", "-k", "help or parse_config or bad_input or out_of_range"]
T_WEIGHTS = ["tests/test_runtime.py", "tests/test_gpt2.py", "-k", "weights or logits or block_size"]
T_MEMORY = ["tests/test_runtime.py", "-k", "memory or param_counts"]
T_SAVE = ["tests/test_runtime.py", "tests/test_faults.py", "-k", "save or locked or keep_best or disk or links or temporar or planted or stale"]
T_GPT2 = ["tests/test_gpt2.py"]
T_TOY = ["tests/test_toy_mdp.py", "-k", "not command_line and not bad_flag"]
T_GAIL_MATH = ["tests/test_gail.py", "-k", "not fine_tunes and not sigterm and not bad_flags and not train_py"]
T_GAIL = ["tests/test_gail.py"]

TARGETS = {
    "iqlearn.py": [(("_SoftValueAndQ.forward", "_SoftValueAndQ.backward", "_check", "transitions", "masked_mean",
                     "iqlearn_loss", "implicit_rewards", "iqlearn_online_loss"), T_IQ),
                   (("policy_entropy",), T_LOSS)],
    "data.py": [(("collate", "Batches.__init__", "Batches._order_of", "Batches.next", "Batches.state_dict",
                  "Batches.load_state_dict", "extract_answer", "is_correct"), T_DATA),
                (("problems_from", "text_of", "correct", "accuracy", "greedy_accuracy"), T_GREEDY),
                (("policy_samples",), T_POLICY),
                (("data_spec",), T_GAIL)],
    "task.py": [(("make_problem", "split_of", "builtin_task"), T_TASK)],
    "metrics.py": [(("ngrams", "bleu", "self_bleu", "distinct_n", "average_ranks", "spearman",
                     "within_problem_spearman"), T_METRICS)],
    "sample.py": [(("beam_search",), T_BEAM),
                  (("score",), T_SCORE),
                  (("token_label", "show_rewards"), T_VIEWER),
                  (("measure", "sample_measurements"), T_EVAL)],
    "model.py": [(("LayerKV.__init__", "LayerKV.extend", "KVCache.__init__", "KVCache.reorder", "GPT.new_cache",
                   "GPT._cached_positions_and_mask", "GPT.generate", "left_pad", "sample_next", "cut_after_eos"),
                  T_MODEL)],
    "train.py": [(("lr_at",), T_LR),
                 (("training_loss",), T_LOSS),
                 (("val_metrics",), T_VAL),
                 (("checkpoint_state", "restore", "setup"), T_RESUME)],
    "runtime.py": [(("cosine_lr",), T_LR),
                   (("check_ranges", "config_parser", "parse_config", "flag_of"), T_FLAGS),
                   (("step_memory", "param_counts"), T_MEMORY)],
    "runfiles.py": [(("resumed_config", "training_checkpoint", "restore_training", "starting_point",
                      "adopt_architecture", "build_model"), T_RESUME),
                    (("load_weights", "model_from_checkpoint"), T_WEIGHTS),
                    (("save_checkpoint", "replacing", "write_checkpoint", "open_own_file", "OutDirLock.__init__",
                      "OutDirLock._lock", "holding_out_dir", "start_log"), T_SAVE)],
    "gail.py": [(("discriminator_loss", "reward_from_logits", "reward_to_go", "leave_one_out_baseline",
                  "kl_to_reference", "policy_loss"), T_GAIL_MATH),
                (("check_config", "discriminator_config", "setup", "save", "step_with_clip", "discriminator_steps", "advantages_of",
                  "train_step", "val_metrics", "log_evaluation", "train_loop", "gail"), T_GAIL)],
    "gpt2.py": [(("gpt2_checkpoint", "config_from_hf", "weights_from_hf"), T_GPT2)],
    "toy_mdp.py": [(("build_mdp", "expert_move", "expert_probs", "sample_expert_actions", "state_ids", "executed",
                     "occupancy", "exact_metrics", "weight_rows", "transition_batch", "transition_weights", "train",
                     "mean_se", "compare_methods"), T_TOY)],
}

# --- mutation operators ----------------------------------------------------------------------------
BINOPS = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult, ast.FloorDiv],
          ast.FloorDiv: [ast.Div, ast.Mod], ast.Mod: [ast.FloorDiv], ast.Pow: [ast.Mult],
          ast.BitOr: [ast.BitAnd], ast.BitAnd: [ast.BitOr]}
CMPOPS = {ast.Lt: [ast.LtE, ast.GtE], ast.LtE: [ast.Lt, ast.Gt], ast.Gt: [ast.GtE, ast.LtE],
          ast.GtE: [ast.Gt, ast.Lt], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.In: [ast.NotIn],
          ast.NotIn: [ast.In], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is]}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
          ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
          ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
          ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
NAMES = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax", "all": "any", "any": "all",
         "sum": "mean", "mean": "sum", "ones_like": "zeros_like", "zeros_like": "ones_like",
         "logsumexp": "amax", "log_softmax": "softmax", "softmax": "log_softmax", "exp": "log", "log": "exp",
         "exp_": "log_", "mul_": "add_", "add_": "mul_", "scatter_add_": "scatter_",
         "topk": "kthvalue", "floor": "ceil", "ceil": "floor", "cos": "sin", "sqrt": "abs", "abs": "sqrt",
         "square": "abs", "eval": "train", "train": "eval"}
AXIS_METHODS = {"unsqueeze", "squeeze", "gather", "size", "scatter", "scatter_", "scatter_add_", "flatten",
                "transpose", "softmax", "log_softmax", "logsumexp", "index_add_", "sum", "mean", "argmax",
                "argmin", "amax", "cumsum", "prod"}  # methods whose first argument is an axis
BUILTIN_SWAPS = {"max": "min", "min": "max", "all": "any", "any": "all"}


def simple(node) -> bool:
    """A name, attribute, constant or len()/round() call: swapping two of these in a dict gives
    bookkeeping mutants (which field holds num_samples) rather than wrong numbers."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("len", "round"):
        return True
    return isinstance(node, (ast.Name, ast.Attribute, ast.Constant))


class Mutant:
    def __init__(self, file, func, line, edits, description):
        self.file, self.func, self.line, self.edits, self.description = file, func, line, edits, description
        self.id = None

    def apply(self, source: bytes) -> bytes:
        for start, end, text in sorted(self.edits, reverse=True):
            source = source[:start] + text.encode() + source[end:]
        return source


class Finder:
    """Walks the target functions of one file and proposes mutants as byte-range edits."""

    def __init__(self, file: str, source: bytes, functions: tuple[str, ...]):
        self.file, self.source, self.functions = file, source, functions
        self.line_start = [0]
        for line in source.split(b"\n"):
            self.line_start.append(self.line_start[-1] + len(line) + 1)
        self.mutants, self.axes = [], set()

    def offset(self, line: int, col: int) -> int:
        return self.line_start[line - 1] + col

    def span(self, node) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def text(self, node) -> str:
        start, end = self.span(node)
        return self.source[start:end].decode()

    def add(self, func, node, edits, description):
        self.mutants.append(Mutant(self.file, func, node.lineno, edits, description))

    def negated(self, node) -> bool:
        start, _ = self.span(node)
        return self.source[:start].rstrip().endswith(b"-") and not self.source[:start].rstrip().endswith(b"->")

    def op_between(self, func, node, left, right, old, new):
        """Replace the operator token `old` in the source between two operand nodes."""
        start, end = self.span(left)[1], self.span(right)[0]
        gap = self.source[start:end].decode()
        symbol = SYMBOL[old]
        pattern = (r"(?<![<>=!*/])" + re.escape(symbol) + r"(?![=*/])") if symbol[0] in "<>=!*/+-%|&" \
            else r"\b" + symbol.replace(" ", r"\s+") + r"\b"
        m = re.search(pattern, gap)
        if m is None:
            return
        edit = (start + m.start(), start + m.end(), SYMBOL[new])
        self.add(func, node, [edit], f"{symbol} -> {SYMBOL[new]}")

    def run(self, tree: ast.Module) -> list[Mutant]:
        found = set()

        def visit(body, prefix=""):
            for node in body:
                if isinstance(node, ast.ClassDef):
                    visit(node.body, prefix + node.name + ".")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = prefix + node.name
                    if name in self.functions:
                        found.add(name)
                        for stmt in node.body:
                            self.walk(name, stmt)
        visit(tree.body)
        missing = sorted(set(self.functions) - found)
        if missing:  # a renamed function would otherwise drop out of the run unnoticed
            sys.exit(f"mutate.py: error: TARGETS names functions {self.file} does not have: {', '.join(missing)}")
        return self.mutants

    def note_axes(self, node):
        """Axis arguments (dim=-1, x.unsqueeze(-1), x.size(1), ...) are not mutated: a wrong axis
        changes a shape and crashes (killed by any test), so those mutants only add run time."""
        if not isinstance(node, ast.Call):
            return
        for kw in node.keywords:
            if kw.arg in ("dim", "axis", "keepdim"):
                self.axes.update(id(n) for n in ast.walk(kw.value))
        is_method = isinstance(node.func, ast.Attribute) and not (
            isinstance(node.func.value, ast.Name) and node.func.value.id in ("torch", "F", "np"))
        if is_method and node.func.attr in AXIS_METHODS and node.args:
            self.axes.update(id(n) for n in ast.walk(node.args[0]))

    def walk(self, func, node, in_fstring=False):
        if isinstance(node, ast.JoinedStr):
            return  # positions inside f-strings are unreliable before Python 3.12: leave them alone
        if isinstance(node, (ast.FunctionDef, ast.Lambda)) and not isinstance(node, ast.Lambda):
            for stmt in node.body:
                self.walk(func, stmt)
            return
        self.note_axes(node)
        self.mutate(func, node)
        for child in ast.iter_child_nodes(node):
            self.walk(func, child)

    def mutate(self, func, node):
        if isinstance(node, ast.BinOp):
            for new in BINOPS.get(type(node.op), []):
                self.op_between(func, node, node.left, node.right, type(node.op), new)
        elif isinstance(node, ast.AugAssign):
            for new in BINOPS.get(type(node.op), []):
                start, end = self.span(node.target)[1], self.span(node.value)[0]
                gap = self.source[start:end].decode()
                m = re.search(re.escape(SYMBOL[type(node.op)]) + "=", gap)
                if m:
                    self.add(func, node, [(start + m.start(), start + m.end(), SYMBOL[new] + "=")],
                             f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}=")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                for new in CMPOPS.get(type(op), []):
                    self.op_between(func, node, operands[i], operands[i + 1], type(op), new)
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            self.op_between(func, node, node.values[0], node.values[1], type(node.op), new)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            pass  # -1 is mutated as a constant (to -2), below
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            start, end = self.span(node)
            self.add(func, node, [(start, end, "(" + self.text(node.operand) + ")")],
                     f"drop unary {type(node.op).__name__}")
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str) and id(node) not in self.axes:
            start, end = self.span(node)
            v = node.value
            if isinstance(v, bool):
                self.add(func, node, [(start, end, str(not v))], f"{v} -> {not v}")
            elif isinstance(v, int) and self.negated(node):
                self.add(func, node, [(start, end, str(v + 1))], f"-{v} -> -{v + 1}")
            elif isinstance(v, int):
                self.add(func, node, [(start, end, str(v + 1))], f"{v} -> {v + 1}")
            elif isinstance(v, float):
                new = 0.0 if v != 0 else 1.0
                self.add(func, node, [(start, end, repr(new))], f"{v} -> {new}")
        elif isinstance(node, ast.Name) and node.id in BUILTIN_SWAPS:
            start, end = self.span(node)
            self.add(func, node, [(start, end, BUILTIN_SWAPS[node.id])], f"{node.id} -> {BUILTIN_SWAPS[node.id]}")
        elif isinstance(node, ast.Attribute) and node.attr in NAMES and NAMES[node.attr] != node.attr:
            start, end = self.span(node)
            self.add(func, node, [(end - len(node.attr), end, NAMES[node.attr])],
                     f".{node.attr} -> .{NAMES[node.attr]}")
        elif isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            start, end = self.span(node)
            self.add(func, node, [(start, end, "pass")], f"delete statement `{self.text(node)[:40]}`")
        elif isinstance(node, ast.Dict):
            values = [v for k, v in zip(node.keys, node.values) if k is not None]
            for i in range(len(values)):  # swap each value with the next two
                for j in range(i + 1, min(i + 3, len(values))):
                    a, b = values[i], values[j]
                    if self.text(a) != self.text(b) and not (simple(a) or simple(b)):
                        self.add(func, a, [(*self.span(a), self.text(b)), (*self.span(b), self.text(a))],
                                 f"swap dict values {i} and {j}")
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            elts = node.value.elts
            for i in range(len(elts) - 1):
                a, b = elts[i], elts[i + 1]
                if self.text(a) != self.text(b):
                    self.add(func, node, [(*self.span(a), self.text(b)), (*self.span(b), self.text(a))],
                             f"swap returned values {i} and {i + 1}")


def mutants_of(file: str) -> list[tuple[Mutant, list[str]]]:
    path = os.path.join(ROOT, file)
    source = open(path, "rb").read()
    tree = ast.parse(source)
    original = ast.dump(tree)
    out, seen = [], set()
    for functions, selection in TARGETS[file]:
        for m in Finder(file, source, functions).run(tree):
            counter = sum(1 for other, _ in out if other.func == m.func)
            m.id = f"{file}:{m.func}:{counter}"
            new = m.apply(source)
            try:
                dumped = ast.dump(ast.parse(new))
            except SyntaxError:
                continue
            if dumped == original or dumped in seen:  # no-op or duplicate
                continue
            seen.add(dumped)
            out.append((m, selection))
    # number per function after filtering, so ids are stable
    counts = {}
    for m, _ in out:
        counts[m.func] = counts.get(m.func, -1) + 1
        m.id = f"{file}:{m.func}:{counts[m.func]}"
    return out


def diff_line(m: Mutant, source: bytes) -> str:
    new = m.apply(source).decode().splitlines()
    old = source.decode().splitlines()
    changed = [f"{i + 1}: {old[i].strip()}  -->  {new[i].strip()}" for i in range(min(len(old), len(new)))
               if old[i] != new[i]]
    return " | ".join(changed) or "(multi-line)"


# --- running ---------------------------------------------------------------------------------------
def copy_tree(dest: str) -> None:
    for name in os.listdir(ROOT):
        if name.endswith(".py") or name in ("README.md", "requirements.txt"):
            shutil.copy2(os.path.join(ROOT, name), dest)
    for folder in ("tests", "docs"):
        shutil.copytree(os.path.join(ROOT, folder), os.path.join(dest, folder), ignore=shutil.ignore_patterns("__pycache__"))


CHILD = None  # the forked test run in progress, killed with us


def stop(signum, frame):
    if CHILD is not None:
        os.killpg(CHILD, signal.SIGKILL)
    raise KeyboardInterrupt


def run_selection(workdir: str, selection: list[str], timeout: float) -> tuple[str, float]:
    """Run pytest on the selection in a forked child: 'passed', 'failed', 'timeout' or 'error'."""
    # test files named in a selection but not (yet) in the tree are left out
    selection = [a for a in selection if not a.startswith("tests/") or os.path.exists(os.path.join(workdir, a))]
    began = time.time()
    pid = os.fork()
    if pid == 0:  # the child
        os.setpgid(0, 0)
        code = 3
        try:
            os.chdir(workdir)
            sys.path.insert(0, workdir)
            sys.dont_write_bytecode = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest
            code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *selection])
        finally:
            os._exit(int(code))
    global CHILD
    CHILD = pid
    deadline = began + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            CHILD = None
            return "timeout", time.time() - began
        time.sleep(0.05)
    CHILD = None
    code = os.waitstatus_to_exitcode(status)
    result = {0: "passed", 1: "failed", 2: "failed", 5: "no tests"}.get(code, "error")
    return result, time.time() - began


def sample_spread(found, n, seed):
    """n mutants of one file at random, split evenly over its target groups (selections), in
    their original order."""
    import random
    groups = {}
    for i, (m, s) in enumerate(found):
        groups.setdefault(tuple(s), []).append(i)
    per_group = max(1, n // max(len(groups), 1))
    rng = random.Random(seed)
    chosen = sorted(i for idx in groups.values() for i in rng.sample(idx, min(per_group, len(idx))))
    return [found[i] for i in chosen]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", action="append", help="only this target file (repeatable)")
    p.add_argument("--func", action="append", help="only this function (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--show", help="print the diff of one mutant id and exit")
    p.add_argument("--json", help="append one JSON line per mutant to this file")
    p.add_argument("--rerun", help="run only the mutants that survived in this JSON-lines file")
    p.add_argument("--sample", type=int, default=None,
                   help="at most this many mutants per file, drawn at random (seeded), spread over its targets")
    p.add_argument("--seed", type=int, default=0, help="of --sample")
    p.add_argument("--timeout", type=float, default=60,
                   help="seconds per mutant, at least (3x the selection's clean run time if longer)")
    args = p.parse_args()

    files = args.file or list(TARGETS)
    todo = []
    for file in files:
        found = [(m, s) for m, s in mutants_of(file) if not args.func or m.func in args.func]
        if args.sample is not None:
            found = sample_spread(found, args.sample, args.seed)
        todo += found
    if args.json and os.path.exists(args.json):  # resume: what is logged there is done
        done = {json.loads(line)["id"] for line in open(args.json)}
        todo = [(m, s) for m, s in todo if m.id not in done]
    if args.rerun:
        survived = {json.loads(line)["id"] for line in open(args.rerun) if json.loads(line)["status"] == "survived"}
        todo = [(m, s) for m, s in todo if m.id in survived]
    sources = {f: open(os.path.join(ROOT, f), "rb").read() for f in files}
    if args.show:
        for m, s in todo:
            if m.id == args.show:
                print(m.description, "\n", diff_line(m, sources[m.file]), "\n", "selection:", " ".join(s))
        return
    if args.list:
        for m, s in todo:
            print(f"{m.id:<40} {m.description:<32} {diff_line(m, sources[m.file])}")
        print(f"{len(todo)} mutants")
        return

    os.environ.setdefault("TIKTOKEN_CACHE_DIR",
                          os.path.abspath(os.path.join(ROOT, "..", "shared", "tiktoken_cache")))
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    import numpy  # noqa: F401  (imported once, before the forks)
    import pytest  # noqa: F401
    import tiktoken  # noqa: F401
    import torch
    torch.set_num_threads(1)

    signal.signal(signal.SIGTERM, stop)
    workdir = tempfile.mkdtemp(prefix="mutate-")
    copy_tree(workdir)
    log = open(args.json, "a") if args.json else None
    tally = {}
    try:
        baseline, limit = {}, {}
        for m, selection in todo:
            key = (m.file, tuple(selection))
            if key not in baseline:
                status, seconds = run_selection(workdir, selection, args.timeout * 10)
                baseline[key] = status
                limit[key] = max(args.timeout, 3 * seconds)  # a mutant may take 3x the clean run
                print(f"baseline {m.file} {' '.join(selection)}: {status} ({seconds:.0f} s)", flush=True)
            if baseline[key] != "passed":
                continue
            path = os.path.join(workdir, m.file)
            with open(path, "wb") as f:
                f.write(m.apply(sources[m.file]))
            try:
                status, seconds = run_selection(workdir, selection, limit[key])
            finally:
                with open(path, "wb") as f:
                    f.write(sources[m.file])
            verdict = {"passed": "survived", "failed": "killed", "timeout": "killed (timeout)",
                       "error": "killed (error)"}.get(status, status)
            t = tally.setdefault(m.file, {"killed": 0, "survived": 0})
            t["survived" if verdict == "survived" else "killed"] += 1
            line = {"id": m.id, "status": verdict, "description": m.description,
                    "diff": diff_line(m, sources[m.file]), "seconds": round(seconds, 1)}
            print(f"{verdict:<17} {m.id:<40} {m.description:<28} {line['diff'][:110]}", flush=True)
            if log:
                log.write(json.dumps(line) + "\n")
                log.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for file, t in tally.items():
        n = t["killed"] + t["survived"]
        print(f"{file}: {t['killed']}/{n} killed ({100 * t['killed'] / max(n, 1):.0f}%), {t['survived']} survived")


if __name__ == "__main__":
    main()
