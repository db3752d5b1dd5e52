"""Every benchmark program still starts: its --help runs (a rename in the package breaks here,
not in a reader's hands), and the docs cite only programs that exist."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # a fresh interpreter per program

PROGRAMS = sorted(p for p in (REPO / "benchmarks").rglob("*.py") if p.name != "turns.py")


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: str(p.relative_to(REPO / "benchmarks")))
def test_every_benchmark_answers_help(program):
    result = subprocess.run([sys.executable, str(program), "--help"], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]


def test_the_docs_cite_only_benchmarks_that_exist():
    cited = set()
    for page in [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "benchmarks").rglob("*.md")]:
        cited |= set(re.findall(r"benchmarks/[\w/]+\.py", page.read_text(encoding="utf-8")))
    missing = sorted(path for path in cited if not (REPO / path).is_file())
    assert not missing, missing
