"""docs/failure_cases.md and the reliability tests name each other: every test the page cites
exists, and every reliability test (and every bad-input case) is on the page."""

from __future__ import annotations

import re
from pathlib import Path

from tests.pipelines import test_bad_input

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "failure_cases.md"
TESTS = REPO / "tests" / "pipelines"
RELIABILITY_FILES = ("test_bad_input.py", "test_interruptions.py", "test_untrusted_files.py",
                     "test_overwrite.py", "test_memory_limits.py", "test_numerics.py",
                     "test_fuzz_readers.py")
_REFERENCE = re.compile(r"`(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`")


def _references() -> list[tuple[str, str, str | None]]:
    return _REFERENCE.findall(PAGE.read_text())


def test_every_cited_test_exists():
    references = _references()
    assert len(references) > 50
    for file, function, case in references:
        source = (TESTS / file).read_text()
        assert f"def {function}(" in source, f"{file}::{function} is cited but does not exist"
        if case:
            assert f'"{case}"' in source, f"{file}::{function}[{case}]: no such case"


def test_every_reliability_test_and_case_is_on_the_page():
    cited = {(file, function) for file, function, _ in _references()}
    for file in RELIABILITY_FILES:
        for function in re.findall(r"^def (test_\w+)\(", (TESTS / file).read_text(), re.MULTILINE):
            assert (file, function) in cited, f"{file}::{function} is missing from {PAGE.name}"
    cases = {case for file, _, case in _references() if file == "test_bad_input.py" and case}
    missing = set(test_bad_input.SINGLE_INPUT_FAILURES) - cases
    assert not missing, f"bad-input cases missing from {PAGE.name}: {sorted(missing)}"
