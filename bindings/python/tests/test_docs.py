"""Every Python snippet of the README and of docs/ runs, as a program of its own."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 1
            yield pytest.param(match.group(1), id=f"{doc.relative_to(ROOT)}:{line}")


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_runs(code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_the_docs_have_python_snippets():
    # The parametrized test above must not pass by finding nothing.
    assert len(list(snippets())) >= 1
