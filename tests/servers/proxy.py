"""tinyproxy (the Debian package) as a real HTTP CONNECT proxy on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


@contextmanager
def run_tinyproxy(user: str | None = None, password: str | None = None) -> Iterator[int]:
    """Start tinyproxy in the foreground on a free loopback port; yield the port."""
    if not Path(TINYPROXY).exists():
        raise RuntimeError("tinyproxy is not installed (Debian package tinyproxy)")
    folder = Path(tempfile.mkdtemp(prefix="ssl-exporter-tinyproxy-"))
    folder.chmod(0o777)  # tinyproxy drops to nobody and writes its log here
    port = _free_port()
    auth = f"BasicAuth {user} {password}\n" if user else ""
    conf = folder / "tinyproxy.conf"
    # No ConnectPort line: CONNECT is allowed to every port (the test servers use random ones).
    conf.write_text(f"User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 30\n"
                    f"LogFile \"{folder}/tinyproxy.log\"\nLogLevel Info\nMaxClients 20\n"
                    f"Allow 127.0.0.1\nDisableViaHeader Yes\n{auth}")
    process = subprocess.Popen([TINYPROXY, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process, folder)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen[bytes], folder: Path) -> None:
    """tinyproxy binds its own port: poll until it accepts, with a deadline."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (folder / "tinyproxy.log").read_text() if (folder / "tinyproxy.log").exists() else ""
            raise RuntimeError(f"tinyproxy exited {process.returncode}: {log[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"tinyproxy did not listen on 127.0.0.1:{port} within 20 s")
