"""docs/limits.md keeps its promise that every row is held by a test: each named test exists in tests/."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNTESTED_ROWS = {"determinism, GPU"}  # says itself that it was not measured


def defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        names.update(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), flags=re.M))
    return names


def limit_rows() -> list[tuple[str, str]]:
    rows = []
    for line in (ROOT / "docs" / "limits.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[0] not in ("limit", "---"):
            rows.append((cells[0], cells[2]))
    return rows


def test_every_row_of_limits_names_tests_that_exist():
    tests = defined_tests()
    rows = limit_rows()
    assert len(rows) >= 30
    for name, cell in rows:
        named = re.findall(r"`(test_[\w*]+)`", cell)
        assert named or name in UNTESTED_ROWS, f"row {name!r} names no test"
        for pattern in named:
            assert fnmatch.filter(tests, pattern), f"row {name!r} names {pattern}, which is not a test in tests/"
