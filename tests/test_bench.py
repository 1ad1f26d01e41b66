"""bench/run.py runs and writes well-formed results.

Only the shape is checked, never a timing: the numbers of a --quick run on a shared
machine mean nothing. The tools the bench drives (nginx, wrk, blackbox_exporter) are in
tests/debian-packages.txt, so they are present whenever the suite runs through
scripts/test.sh; a missing one fails here with the command that installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
TOOLS = {"nginx": "nginx", "wrk": "wrk", "/usr/bin/prometheus-blackbox-exporter": "prometheus-blackbox-exporter"}
PER_EXPORTER = ["ready_s", "idle_rss_mib", "idle_pss_mib", "processes"] + [
    f"c{c}_{m}" for c in (8, 64) for m in ("probes_per_s", "cpu_ms_per_probe", "p50_ms", "p99_ms")
]
PER_SILENT = ["answered", "last_answer_s", "slowest_probe_s", "peak_rss_mib", "peak_pss_mib"]


def test_quick_bench_writes_wellformed_json_and_table(tmp_path: Path) -> None:
    missing = sorted(pkg for binary, pkg in TOOLS.items() if not shutil.which(binary))
    assert not missing, (f"Debian package(s) {', '.join(missing)} missing: they are listed in "
                         "tests/debian-packages.txt; run scripts/install-test-deps.sh")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--no-install", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((tmp_path / "latest.json").read_text())
    settings = result["settings"]
    assert settings["quick"] is True and settings["rounds"] == 1
    assert set(result["machine"]) >= {"nproc", "cpu_model", "kernel", "python", "openssl"}
    assert len(result["rounds"]) == 1

    summary = result["summary"]
    keys = PER_EXPORTER + [f"silent{n}_{m}" for n in settings["silent_sizes"] for m in PER_SILENT]
    for exporter in ("ssl_exporter", "blackbox"):
        for key in keys:
            value = summary[exporter].get(key)
            assert isinstance(value, int | float) and value > 0, (exporter, key, value)
    for key in keys:
        assert summary["ratio"][key] > 0, key

    file = summary["file"]
    if file["file_status"] == "ok":
        assert file["file_cold_s"] > 0 and file["file_warm_s"] > 0
        assert file["file_series"] > 0
    else:
        assert file["file_status"].startswith("n/a"), file

    runtime = summary["runtime"]
    assert runtime["ssl_exporter"]["event_loop"] in ("uvloop", "asyncio")
    assert runtime["ssl_exporter"]["tls_library"].startswith("ssl module, OpenSSL"), runtime
    assert runtime["blackbox"]["event_loop"] == "Go runtime"
    assert runtime["ssl_exporter"]["tls_version"] == runtime["blackbox"]["tls_version"] == "TLS 1.3", runtime

    goals = result["goals"]
    assert len(goals) == 11  # issue 15's ten, issue 7's file scrape
    assert all(set(goal) == {"goal", "target", "measured", "met"} for goal in goals)
    assert all(goal["met"] in (True, False) for goal in goals[:10]), goals

    table = (tmp_path / "latest.md").read_text()
    assert "| measurement | ssl_exporter | blackbox_exporter | ratio this/blackbox |" in table
    assert "| goal | target | measured | met |" in table
    assert "- ssl_exporter: event loop " in table
