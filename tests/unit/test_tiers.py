"""The test suite's own shape (tests/README.md): every test file lives in a tier folder, and the
unit tier mirrors the package, so a module's tests are found by its name: the tests of
src/dicap/<package>/<module>.py are tests/unit/<package>/test_<module>.py."""

from __future__ import annotations

from pathlib import Path

from helpers import REPO

TESTS = REPO / "tests"
SRC = REPO / "src" / "dicap"
TIERS = ("unit", "workflow", "pipeline", "slurm")
# Unit test files that test no one module, each with its reason: keep this short.
NOT_A_MODULE = {
    "test_structure.py": "the package's shape as a whole: import layers, rules and jobs, the schema",
    "test_tiers.py": "this file: the test suite's shape",
}


def mirrored(test: Path) -> Path:
    """The module a unit test file tests: tests/unit/a/test_b.py -> src/dicap/a/b.py."""
    rel = test.relative_to(TESTS / "unit")
    return SRC / rel.parent / rel.name.removeprefix("test_")


def test_every_unit_test_file_is_named_after_the_module_it_tests():
    files = sorted((TESTS / "unit").rglob("test_*.py"))
    assert len(files) > 40
    orphans = [str(f.relative_to(TESTS)) for f in files if f.name not in NOT_A_MODULE and not mirrored(f).is_file()]
    assert not orphans, f"unit test files without a module of their name in src/dicap/: {orphans}"
    assert all((TESTS / "unit" / name).is_file() for name in NOT_A_MODULE), "an exception names no file: drop it"


def test_every_test_file_lives_in_a_tier_folder():
    misplaced = [str(f.relative_to(TESTS)) for f in TESTS.rglob("test_*.py") if f.relative_to(TESTS).parts[0] not in TIERS]
    assert not misplaced, f"test files outside tests/{{{','.join(TIERS)}}}/: {misplaced}"


def test_the_tiers_are_the_markers_pytest_knows(pytestconfig):
    markers = {line.split(":", 1)[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= markers
    assert pytestconfig.getini("addopts")[:2] == ["-m", "unit"], "a bare `pytest` runs the unit tier"
