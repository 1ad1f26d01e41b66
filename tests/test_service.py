"""The service layer under both faces: the check command stands on it, not on the HTTP face."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FACES = {"ssl_exporter.cli", "ssl_exporter.server", "ssl_exporter.check", "ssl_exporter.web"}


def _loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing ``module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(run.stdout))


def test_check_stands_on_the_service_not_on_the_http_face() -> None:
    loaded = _loaded_by("ssl_exporter.check")
    assert "ssl_exporter.service" in loaded and "ssl_exporter.describe" in loaded
    assert not loaded & {"ssl_exporter.server", "ssl_exporter.web", "ssl_exporter.cli", "ssl_exporter.webconfig"}
    assert "aiohttp.web" not in loaded  # the HTTP server framework, which check never serves with


@pytest.mark.parametrize("module", ["ssl_exporter.service", "ssl_exporter.describe", "ssl_exporter.durations"])
def test_the_layers_under_the_faces_import_no_face(module: str) -> None:
    assert not _loaded_by(module) & FACES
