"""The command line that starts an exporter process, for every test that runs one.

``SSL_EXPORTER_TEST_WORKERS=N`` adds ``--web.workers=N`` to every server command line, so
the whole suite runs with one process (1) as well as with the default worker count (unset).
"""

from __future__ import annotations

import os
import sys


def worker_args() -> list[str]:
    workers = os.environ.get("SSL_EXPORTER_TEST_WORKERS", "")
    return [f"--web.workers={workers}"] if workers else []


def exporter_command(*args: str) -> list[str]:
    """``python -m ssl_exporter ARGS`` (the server; ``check`` takes no server flags)."""
    command = [sys.executable, "-m", "ssl_exporter", *args]
    if args[:1] != ("check",):
        command += worker_args()
    return command
