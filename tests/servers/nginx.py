"""nginx (the Debian package) serving TLS sites on loopback, started and stopped by tests.

The listening sockets are bound by the test and handed to nginx through its ``NGINX``
environment variable (the mechanism nginx uses for binary upgrades), so every port accepts
connections before nginx has even started: no polling for readiness.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Site:
    cert: Path
    key: Path
    directives: list[str] = field(default_factory=list)
    # Where to listen: by default a free port of 127.0.0.1; sites on other loopback addresses
    # (127.0.0.2, ::1) can share one port, as the addresses behind one name do.
    address: str = "127.0.0.1"
    port: int = 0


_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
{servers}
}}
"""

_SERVER = """\
  server {{
    listen {address}:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    {directives}
    location / {{ return 200 "ok\\n"; }}
  }}
"""


@contextmanager
def run_nginx(root: Path, sites: dict[str, Site], *, worker_connections: int = 256,
              backlog: int = 128) -> Iterator[dict[str, int]]:
    """Start nginx with one TLS server per site; yield {site name: port}. nginx's master
    process id is in ``root / "nginx.pid"`` once it has started. bench/run.py raises the
    connection numbers for thousands of concurrent handshakes."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    sockets = {name: _listening_socket(site.address, site.port, backlog) for name, site in sites.items()}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    servers = "".join(
        _SERVER.format(address=f"[{site.address}]" if ":" in site.address else site.address,
                       port=ports[name], cert=site.cert, key=site.key,
                       directives="\n    ".join(site.directives))
        for name, site in sites.items()
    )
    conf = root / "nginx.conf"
    conf.write_text(_CONF.format(root=root, servers=servers, worker_connections=worker_connections))
    check = subprocess.run([NGINX, "-t", "-q", "-p", str(root), "-c", str(conf)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected its test config: {check.stderr.strip()}")
    fds = [sock.fileno() for sock in sockets.values()]
    env = dict(os.environ, NGINX="".join(f"{fd};" for fd in fds))
    process = subprocess.Popen([NGINX, "-p", str(root), "-c", str(conf)], pass_fds=fds, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for sock in sockets.values():
        sock.close()  # nginx holds its own copies
    try:
        yield ports
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
        if process.returncode not in (0, -15):
            raise RuntimeError(f"nginx exited {process.returncode}: {stderr.decode()[-500:]}")


def _listening_socket(address: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock
