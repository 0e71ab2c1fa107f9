"""The README and the pages under docs/ must not rot as the code changes. The course's exercises name
pytest selections: each must still select tests. Every relative link in README.md and docs/*.md must
point at a file that exists and, for `page.md#anchor`, at a heading that page has; every `module.name`
in them and in the docstrings must exist; and the layout they describe holds: no import cycle, a
model.py that imports nothing of the project. Fast: nothing here trains a model."""

import ast
import glob
import json
import os
import re
import subprocess
import sys
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COURSE = os.path.join(ROOT, "docs", "course.md")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def pages() -> list[str]:
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


# --- the exercises ---------------------------------------------------------------------------------
def exercise_selections() -> list[tuple[str, str | None]]:
    course = read(COURSE)
    assert "\n## Exercises\n" in course, "docs/course.md has no '## Exercises' section"
    section = course.split("\n## Exercises\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r'python -m pytest -q ((?:tests/\S+?\.py ?)+?)(?: -k "([^"]+)")?`', section)
    return [(paths.strip(), expression) for paths, expression in found]


def test_exercises_name_selections():
    assert len(exercise_selections()) >= 6


# Collects each selection with pytest.main in one subprocess (torch is imported once) and prints
# how many tests it selected.
COUNT_SELECTED = """
import json, sys, pytest
class Count:
    def pytest_collection_finish(self, session):
        self.n = len(session.items)
counts = []
for path, expression in json.loads(sys.argv[1]):
    count = Count()
    pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *path.split()] + (["-k", expression] if expression else []),
                plugins=[count])
    counts.append(count.n)
print(json.dumps(counts))
"""


def test_every_exercise_selection_selects_tests():
    selections = exercise_selections()
    result = subprocess.run([sys.executable, "-c", COUNT_SELECTED, json.dumps(selections)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for (path, expression), n in zip(selections, counts):
        assert n > 0, f"{path} -k {expression!r} selects no test"


# --- the links -------------------------------------------------------------------------------------
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is no heading, and a
    `[x](y)` in code is no link)."""
    lines, in_fence = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text (markup and link targets dropped), lowercased, every
    character that is not a letter, a digit, a space, '-' or '_' dropped, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link keeps its text only
    text = text.lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in ("L", "N", "M"))
    return kept.replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every anchor a page has, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(read(path)):
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        if anchor in seen:
            seen[anchor] += 1
            found.add(f"{anchor}-{seen[anchor]}")
        else:
            seen[anchor] = 0
            found.add(anchor)
    return found


def relative_links(path: str) -> list[str]:
    # A link's text may wrap onto the next line, so the prose is searched as one string.
    prose = "\n".join(INLINE_CODE.sub("", line) for line in prose_lines(read(path)))
    return [target for target in LINK.findall(prose)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)]   # http:, mailto: ...


def test_anchor_rules():
    assert github_anchor("8. The accuracy–diversity frontier") == "8-the-accuracydiversity-frontier"
    assert github_anchor("Fine-tuning GPT-2 on GSM8K (the paper's setting)") == \
        "fine-tuning-gpt-2-on-gsm8k-the-papers-setting"
    assert github_anchor("1. λ sweep from scratch") == "1-λ-sweep-from-scratch"
    assert github_anchor("Online IQLearn: mixing in the model's own samples") == \
        "online-iqlearn-mixing-in-the-models-own-samples"
    assert github_anchor("`--eval` and_more") == "--eval-and_more"


def test_the_pages_exist():
    names = {os.path.relpath(p, ROOT) for p in pages()}
    for name in ("README.md", "docs/results.md", "docs/course.md", "docs/gpt2.md"):
        assert name in names, f"{name} is missing"


@pytest.mark.parametrize("page", [os.path.relpath(p, ROOT) for p in pages()])
def test_every_relative_link_resolves(page):
    source = os.path.join(ROOT, page)
    broken = []
    for target in relative_links(source):
        file_part, _, anchor = target.partition("#")
        destination = (os.path.normpath(os.path.join(os.path.dirname(source), file_part))
                       if file_part else source)
        if not os.path.exists(destination):
            broken.append(f"{target} (no file {os.path.relpath(destination, ROOT)})")
        elif anchor and destination.endswith(".md") and anchor not in anchors(destination):
            broken.append(f"{target} (no heading with anchor #{anchor} in "
                          f"{os.path.relpath(destination, ROOT)})")
    assert not broken, f"{page}: broken links: " + "; ".join(broken)


def test_the_readme_links_every_docs_page():
    readme_targets = {os.path.normpath(t.partition("#")[0])
                      for t in relative_links(os.path.join(ROOT, "README.md"))}
    for page in pages()[1:]:
        name = os.path.relpath(page, ROOT)
        assert name in readme_targets, f"README.md does not link {name}"


# --- the layout: arrows go one way -------------------------------------------------------------------
def project_imports() -> dict[str, set[str]]:
    """module -> the project's modules it imports anywhere in it (at the top or inside a function),
    from the source (ast), for the files at the top and in lab/."""
    files = {os.path.splitext(os.path.relpath(p, ROOT))[0].replace(os.sep, ".").removesuffix(".__init__"): p
             for p in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "lab", "*.py"))}
    graph = {}
    for module, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(read(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = found & files.keys() - {module}
    return graph


def test_the_import_graph_has_no_cycle_and_the_model_imports_nothing_of_the_project():
    graph = project_imports()
    assert graph["model"] == set() and graph["iqlearn"] == set()
    assert {"train", "model", "runtime", "runfiles", "gpt2", "data", "errors", "lab.runner"} <= graph.keys()
    assert "data" not in graph["runtime"]   # flags, devices and processes need no tokenizer
    done, path = set(), []

    def visit(module):   # depth first; a module met again on the current path closes a cycle
        assert module not in path, "import cycle: " + " -> ".join(path[path.index(module):] + [module])
        if module not in done:
            path.append(module)
            for imported in sorted(graph[module]):
                visit(imported)
            path.pop()
            done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_tokenizer_and_data_module_import_no_torch():
    found = subprocess.run([sys.executable, "-c", "import sys, data; print('torch' in sys.modules)"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "False", found.stderr


# --- names in the prose ------------------------------------------------------------------------------
QUALIFIED = re.compile(r"`((?:lab\.)?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")   # `module.name` at a code span's start


def qualified_names() -> list[tuple[str, str]]:
    """(where, `module.name...`) for every code span that starts with a project module's name or a
    project class's (`GPT.generate` is read as `model.GPT.generate`), in the pages and in the
    docstrings of the project's files."""
    graph, texts, classes = project_imports(), [(os.path.relpath(p, ROOT), read(p)) for p in pages()], {}
    for module in graph:
        path = os.path.join(ROOT, *module.split(".")) + (".py" if module != "lab" else "/__init__.py")
        tree = ast.parse(read(path))
        texts += [(module, ast.get_docstring(node) or "") for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))]
        classes.update({node.name: module for node in tree.body if isinstance(node, ast.ClassDef)})
    found = [(where, name) for where, text in texts for name in QUALIFIED.findall(text)]
    return [(where, f"{classes[name.split('.')[0]]}.{name}" if name.split(".")[0] in classes else name)
            for where, name in found if name.split(".")[0] in graph.keys() | classes.keys()
            and name.split(".")[1] not in FILE_ENDINGS]


FILE_ENDINGS = ("py", "md", "json", "jsonl", "txt", "pt", "bin", "safetensors")   # `train.py`, `model.safetensors`


def resolves(name: str) -> bool:
    """Whether module.attribute... exists (a dataclass field counts, and `model.x` may name a GPT's
    method: the code's name for a GPT is `model`)."""
    import dataclasses
    import importlib
    parts = name.split(".")
    split = 2 if parts[0] == "lab" else 1
    try:
        found = importlib.import_module(".".join(parts[:split]))
    except ImportError:
        return False
    if parts[0] == "model" and not hasattr(found, parts[1]):
        found = found.GPT
    for part in parts[split:]:
        fields = [f.name for f in dataclasses.fields(found)] if dataclasses.is_dataclass(found) else []
        if not hasattr(found, part) and part not in fields:
            return False
        found = getattr(found, part, None)
    return True


def test_every_backticked_module_name_resolves():
    names = qualified_names()
    assert len(names) > 10 and resolves("train.TrainConfig.lam") and not resolves("model.GPT.from_pretrained")
    stale = [f"{where}: {name}" for where, name in names if not resolves(name)]
    assert not stale, "names that do not exist: " + "; ".join(stale)


def test_the_reading_guides_line_counts_are_the_files():
    guide = read(os.path.join(ROOT, "README.md")).split("## Reading guide", 1)[1].split("\n## ", 1)[0]
    counts = re.findall(r"`(\w+\.py)`\**\s+\((\d+)(?: lines)?\)", guide)
    assert len(counts) >= 6, counts   # the lesson's three, runtime, runfiles, gpt2
    for name, count in counts:
        assert len(read(os.path.join(ROOT, name)).splitlines()) == int(count), f"README says {name} has {count} lines"
