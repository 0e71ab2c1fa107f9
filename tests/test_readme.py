"""The README's exercises name pytest selections; each must still select tests, or the exercise
has rotted as the code changed."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exercise_selections() -> list[tuple[str, str | None]]:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Exercises", 1)[1].split("\n## ", 1)[0]
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
