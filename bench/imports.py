#!/usr/bin/env python3
"""Idle memory and start-up time of each heavy import, to decide which to make lazy.

Each measurement is a fresh interpreter (this one, with PYTHONPATH set to the checkout) that
imports a base set every configuration needs (asyncio, ssl, cryptography.x509,
prometheus_client), then one module more: the RSS and PSS it adds over the base alone, and
its cumulative import time from ``python -X importtime`` (the row of the module named).
Medians of --repeat runs. Prints a markdown table.

    .venv/bin/python bench/imports.py
    .venv/bin/python bench/imports.py --repeat 7
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "import asyncio, ssl, cryptography.x509, prometheus_client"
# Third-party libraries some configurations only use, and which configuration needs them.
LIBRARIES = [
    ("aiohttp", "always (HTTP server); also OCSP/CRL/ARI/RDAP fetches"),
    ("OpenSSL.SSL", "pyOpenSSL: OCSP stapling (revocation)"),
    ("bcrypt", "--web.config.file with basic_auth_users"),
    ("dns.asyncresolver", "dnspython: tcp.dns_servers, --dns.server, CAA"),
    ("publicsuffixlist", "rdap prober"),
    ("yaml", "always (config)"),
    ("xml.etree.ElementTree", "starttls: xmpp (with xml.sax.saxutils)"),
    ("uvloop", "the event loop, where installed (imported by cli.main)"),
    ("ssl_exporter.cli", "everything the exporter imports at start"),
]
# The exporter's own modules behind optional features: what they cost in `import
# ssl_exporter.cli` (their memory is mostly the libraries above, so only time is shown).
OWN = [
    ("ssl_exporter.probers.kube", "kubeconfig / kubernetes probers"),
    ("ssl_exporter.webconfig", "--web.config.file"),
    ("ssl_exporter.revocation", "modules with revocation:"),
    ("ssl_exporter.stapling", "OCSP stapling"),
    ("ssl_exporter.resolve", "name resolution (dnspython)"),
    ("ssl_exporter.caa", "modules with caa:"),
    ("ssl_exporter.probers.rdap", "rdap prober"),
    ("ssl_exporter.ari", "modules with ari:"),
    ("aiohttp", "HTTP server and client"),
    ("prometheus_client", "exposition, /metrics"),
]
_PROBE = """
import sys
{base}
def mem():
    out = {{}}
    for name, path in (("rss", "/proc/self/status"), ("pss", "/proc/self/smaps_rollup")):
        for line in open(path):
            if line.startswith(("VmRSS:", "Pss:")):
                out[name] = int(line.split()[1])
                break
    return out
before = mem()
{extra}
after = mem()
print("MEM", after["rss"] - before["rss"], after["pss"] - before["pss"], after["rss"], after["pss"])
import ssl_exporter.cli
print("AT_START", " ".join(sorted(sys.modules)))
"""


def measure(module: str | None) -> tuple[int, int, int, int, float, set[str]]:
    """(added RSS KiB, added PSS KiB, total RSS KiB, total PSS KiB, cumulative import µs,
    the modules loaded after ``import ssl_exporter.cli``)."""
    code = _PROBE.format(base=BASE, extra=f"import {module}" if module else "")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=True)
    rss, pss, total_rss, total_pss = (int(x) for x in re.search(r"^MEM (.*)$", done.stdout, re.M).group(1).split())
    at_start = set(re.search(r"^AT_START (.*)$", done.stdout, re.M).group(1).split())
    micros = 0.0
    if module:
        # "import time: self [us] | cumulative | imported package"; the module's own row
        # (a dotted name appears with its parents first: take the row of the full name).
        for line in done.stderr.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2].strip() == module:
                micros = float(parts[1])
                break
    return rss, pss, total_rss, total_pss, micros, at_start


def start_import_times() -> dict[str, float]:
    """Cumulative µs of every module in one ``import ssl_exporter.cli`` (first import)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ssl_exporter.cli"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    times = {}
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            times.setdefault(parts[2], float(parts[1]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = [measure(None) for _ in range(args.repeat)]
    print(f"Base (`{BASE}`): RSS {statistics.median(b[2] for b in base) / 1024:.1f} MiB, "
          f"PSS {statistics.median(b[3] for b in base) / 1024:.1f} MiB; medians of {args.repeat} runs.\n")
    at_start = base[0][5]
    print("| import | needed by | imported at start | + RSS (MiB) | + PSS (MiB) | import time (ms) |")
    print("|---|---|---|---:|---:|---:|")
    for module, needed in LIBRARIES:
        runs = [measure(module) for _ in range(args.repeat)]
        rss, pss, _, _, micros = (statistics.median(r[i] for r in runs) for i in range(5))
        print(f"| `{module}` | {needed} | {'yes' if module in at_start else 'no'} | {rss / 1024:.1f} "
              f"| {pss / 1024:.1f} | {micros / 1000:.0f} |")
    runs = [start_import_times() for _ in range(args.repeat)]
    print("\nWithin `import ssl_exporter.cli` (cumulative: the module and what it imports first):\n")
    print("| module | needed by | import time (ms) |")
    print("|---|---|---:|")
    for module, needed in OWN:
        times = [r[module] for r in runs if module in r]
        shown = f"{statistics.median(times) / 1000:.0f}" if times else "not imported"
        print(f"| `{module}` | {needed} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
