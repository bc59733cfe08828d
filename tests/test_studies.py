"""benchmark/studies/: each study still imports and prints its --help, run from the repository root as its
README says. The studies themselves are measurements, run only by hand."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "benchmark" / "studies").glob("*.py"))


def test_every_study_is_in_its_readme():
    readme = (ROOT / "benchmark" / "studies" / "README.md").read_text()
    assert STUDIES and all(f"python benchmark/studies/{s.name}" in readme for s in STUDIES)


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.name)
def test_study_prints_help(study):
    result = subprocess.run([sys.executable, str(study.relative_to(ROOT)), "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
