"""Unbound (the Debian package) resolving names under ``.test`` on a loopback port.

Why Unbound: one daemon serves everything the DNS tests need from its own configuration:
addresses, CAA and CNAME records (an ``auth-zone`` it resolves from, following CNAME chains
as a recursive resolver does), NXDOMAIN (names the zone lacks), REFUSED
(a ``refuse`` zone), SERVFAIL (a stub zone whose only server is on the do-not-query list)
and a slow zone (a stub zone whose server, a socket this module holds, never answers). NSD
and Knot are authoritative only and cannot fail on purpose; dnsmasq forwards what it does
not know and writes CAA as hex.

Nothing leaves the machine: every query Unbound could send goes out from 127.0.0.1
(``outgoing-interface``), the root is refused (``local-zone: "." refuse``) and is a stub
zone on loopback as well, there is no DNSSEC trust anchor to fetch, and no remote control.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.servers.daemons import DaemonError, free_ports, require

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
START_TIMEOUT = 30.0

_CONF = """\
server:
  interface: 127.0.0.1@{port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{root}"
  pidfile: "{root}/unbound.pid"
  logfile: ""
  use-syslog: no
  verbosity: 1
  num-threads: 1
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  outgoing-interface: 127.0.0.1
  do-not-query-localhost: no
  do-not-query-address: 127.0.0.254
  module-config: "iterator"
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  infra-host-ttl: 1
  local-zone: "." refuse
  local-zone: "test." transparent
  local-zone: "refused.test." refuse
auth-zone:
  name: "test."
  zonefile: "{root}/test.zone"
  for-downstream: no
  for-upstream: yes
  fallback-enabled: no
stub-zone:
  name: "servfail.test."
  stub-addr: 127.0.0.254
stub-zone:
  name: "slow.test."
  stub-addr: 127.0.0.1@{blackhole}
stub-zone:
  name: "."
  stub-addr: 127.0.0.254
remote-control:
  control-enable: no
"""

# The zone the records are added to; TTL 0 so that nothing is cached between tests.
_ZONE = """\
$ORIGIN test.
$TTL 0
@ SOA ns.test. hostmaster.test. 1 3600 600 86400 0
@ NS ns.test.
ns A 127.0.0.1
"""


@contextmanager
def run_unbound(root: Path, records: Sequence[str]) -> Iterator[int]:
    """Start Unbound serving ``records`` (lines of the ``test.`` zone file); yield its port.

    Names under ``servfail.test`` answer SERVFAIL, under ``refused.test`` REFUSED, under
    ``slow.test`` never; any other name under ``.test`` that no record names is NXDOMAIN.
    """
    require(UNBOUND, "unbound")
    root.mkdir(parents=True, exist_ok=True)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the slow zone's server: never answers
    blackhole.bind(("127.0.0.1", 0))
    port = free_ports("dns")["dns"]
    (root / "test.zone").write_text(_ZONE + "".join(f"{line}\n" for line in records))
    conf = root / "unbound.conf"
    conf.write_text(_CONF.format(port=port, root=root, blackhole=blackhole.getsockname()[1]))
    check = subprocess.run([shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf", str(conf)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise DaemonError(f"unbound rejected its test config: {check.stdout}{check.stderr}")
    log = root / "unbound.out"
    with open(log, "wb") as out:
        process = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_answering(process, port, log)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        blackhole.close()


def _wait_until_answering(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Ready when a query for a name it refuses comes back: the listener and the config are up."""
    deadline = time.monotonic() + START_TIMEOUT
    query = dns.message.make_query("ready.refused.test.", "A")
    while True:
        if process.poll() is not None:
            raise DaemonError(f"unbound exited with status {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
        except (OSError, dns.exception.Timeout):
            answer = None
        if answer is not None and answer.rcode() == dns.rcode.REFUSED:
            return
        if time.monotonic() > deadline:
            raise DaemonError(f"unbound did not answer on 127.0.0.1:{port}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
