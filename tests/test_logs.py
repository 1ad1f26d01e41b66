"""Log lines: logfmt and JSON, one line per failed probe, nothing that breaks a line."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp.test_utils import TestClient

from ssl_exporter import logs
from tests.conftest import PKI, probe
from tests.servers import pytls
from tests.test_server import ExporterProcess


def _record(msg: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("ssl_exporter.server", logging.WARNING, __file__, 7, msg, None, None)
    record.fields = fields
    return record


def test_logfmt_quotes_and_escapes_what_could_split_a_line() -> None:
    line = logs.LogfmtFormatter().format(_record(
        "probe failed", target="mx.example.test:25", err='say "hi"\nlevel=error forged', ok=True,
        ctrl="\x1b[31mred", empty=""))
    assert "\n" not in line
    assert ' level=warn caller=test_logs:7 msg="probe failed" target=mx.example.test:25 ' in line
    assert 'err="say \\"hi\\"\\nlevel=error forged"' in line
    assert 'ok=true ctrl="\\u001b[31mred" empty=""' in line
    assert line.startswith("ts=") and line.split()[0].endswith("Z")


def test_json_lines_parse() -> None:
    line = logs.JSONFormatter().format(_record("probe failed", target="a", probe_id=3, err="x\ny"))
    doc = json.loads(line)
    assert "\n" not in line
    assert (doc["level"], doc["msg"], doc["target"]) == ("warn", "probe failed", "a")
    assert (doc["probe_id"], doc["err"]) == (3, "x\ny")


async def test_one_line_per_failed_probe(client: TestClient, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    # Two failures in one probe (untrusted chain and the wrong name) still make one line.
    leaf = pki.other_inter.issue("stranger.example.test", dns=("stranger.example.test",))
    cert, key = pki.chain_files("logs-stranger", leaf, pki.other_inter)
    good = pki.inter.issue("good.example.test", dns=("good.example.test",))
    good_cert, good_key = pki.chain_files("logs-good", good, pki.inter)
    with pytls.tls_server(cert, key) as (port, _), pytls.tls_server(good_cert, good_key) as (good_port, _):
        await probe(client, f"127.0.0.1:{port}", hostname="wrong.example.test")
        await probe(client, f"127.0.0.1:{good_port}", hostname="good.example.test")  # no line
    [record] = [r for r in caplog.records if r.name == "ssl_exporter.server"]
    fields = record.fields  # type: ignore[attr-defined]
    assert record.levelname == "WARNING" and record.getMessage() == "probe failed"
    assert fields["target"] == f"127.0.0.1:{port}"
    assert (fields["module"], fields["hostname"]) == ("test", "wrong.example.test")
    assert (fields["stage"], fields["reason"]) == ("verify", "unknown_issuer")
    assert fields["err"] == "OpenSSL: unable to get local issuer certificate (code 20)"
    assert fields["more_errors"].startswith("verify/hostname_mismatch: wrong.example.test does not match")
    assert fields["probe_id"] == 1


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_process_logs_a_failed_probe_in_the_chosen_format(pki: PKI, config_file, fmt: str) -> None:
    leaf = pki.inter.issue("localhost", dns=("localhost",))
    cert, key = pki.chain_files(f"logs-process-{fmt}", leaf)  # no intermediate: an incomplete chain
    exporter = ExporterProcess(f"--config.file={config_file}", f"--log.format={fmt}")
    try:
        with pytls.tls_server(cert, key) as (port, _):
            status, _ = exporter.get(f"/probe?target=127.0.0.1:{port}&hostname=localhost")
        line = exporter.wait_for_log("probe failed")
        status_log, page = exporter.get("/probe/log?id=1")
    finally:
        assert exporter.stop() == 0
    assert status == 200 and status_log == 200
    if fmt == "json":
        doc = json.loads(line)
        assert (doc["level"], doc["msg"], doc["probe_id"]) == ("warn", "probe failed", 1)
        assert (doc["target"], doc["module"], doc["stage"], doc["reason"]) == (
            f"127.0.0.1:{port}", "test", "verify", "incomplete_chain")
        assert doc["err"] == "OpenSSL: unable to get local issuer certificate (code 20)"
    else:
        assert "level=warn" in line and 'msg="probe failed" probe_id=1 ' in line
        assert f" target=127.0.0.1:{port} module=test hostname=localhost stage=verify reason=incomplete_chain " in line
        assert ' err="OpenSSL: unable to get local issuer certificate (code 20)" ' in line
    assert "OpenSSL: unable to get local issuer certificate (code 20)" in page  # the same probe, id 1


def test_a_failed_probe_of_every_address_logs_the_failing_addresses_reason(caplog: pytest.LogCaptureFixture) -> None:
    """With tcp.all_addresses the errors are the addresses' own: the line named none of them."""
    from ssl_exporter.history import History
    from ssl_exporter.result import AddressResult, ProbeError, ProbeResult
    from ssl_exporter.server import log_failure

    stale = ProbeResult(False, 0.1, errors=(ProbeError("verify", "expired", "certificate has expired"),))
    timeout = ProbeResult(False, 0.2, errors=(ProbeError("handshake", "timeout", "no answer"),))
    result = ProbeResult(False, 0.3, addresses=(AddressResult("127.0.0.2", ProbeResult(True, 0.1)),
                                                AddressResult("127.0.0.3", stale),
                                                AddressResult("127.0.0.4", timeout)))
    record = History().add("all", "www.example.test:443", "www.example.test", {}, result)
    with caplog.at_level(logging.WARNING, logger="ssl_exporter.server"):
        log_failure(record)
    fields = caplog.records[-1].fields  # type: ignore[attr-defined]
    assert (fields["address"], fields["stage"], fields["reason"]) == ("127.0.0.3", "verify", "expired")
    assert fields["more_errors"] == "127.0.0.4 handshake/timeout: no answer"
