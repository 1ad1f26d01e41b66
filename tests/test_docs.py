"""Documentation that must not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from ssl_exporter.errors import REASONS

ROOT = Path(__file__).parent.parent


def test_every_reason_is_documented_with_its_meaning() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z_0-9]+)` \| (.+) \|$", text, re.MULTILINE))
    for reason, meaning in REASONS.items():
        assert documented.get(reason) == meaning, reason


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in readme
    assert "scripts/test.sh" in ci
