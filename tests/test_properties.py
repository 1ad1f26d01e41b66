"""Property-based tests: whatever the input, the parsers fail only in their documented way.

- targets: any text -> a Target or TargetError (HTTP 400), never another exception (500).
- config: any YAML-ish mapping or text -> a Config or ConfigError.
- certificates: mutated DER of a real certificate -> CertInfo or CertificateError, and any
  CertInfo encodes in both exposition formats and parses back.
- the ServerHello sniffer and the error mapping: any bytes, any exception.

Runs are bounded (a few hundred examples, no per-example deadline) to keep the suite fast.
"""

from __future__ import annotations

import hashlib
import math
import socket
import ssl

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from ssl_exporter import config, metrics, prepare, tls
from ssl_exporter.certs import CertificateError, parse_der
from ssl_exporter.errors import REASONS, STAGES, ProbeFailure, classify
from ssl_exporter.result import ProbeError, ProbeResult
from ssl_exporter.targets import Target, TargetError, parse_hostname, parse_target
from tests.pki import make_cert, make_root
from tests.servers import hostile

# No example database: a run leaves no .hypothesis/ folder behind in the work tree.
BOUNDED = settings(max_examples=300, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

# --- targets ----------------------------------------------------------------------------------

_label = st.from_regex(r"[A-Za-z0-9_-]{0,64}", fullmatch=True)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=5).map(".".join),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.text(max_size=30),
)
_port = st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=8), st.just(""))
_targets = st.one_of(
    st.text(),
    st.builds(lambda h, p: f"{h}:{p}", _host, _port),
    st.builds(lambda s, h, p, path: f"{s}://{h}{':' + p if p else ''}/{path}",
              st.sampled_from(["https", "smtp", "gopher", "HTTPS", ""]), _host, _port, st.text(max_size=10)),
)


def _check_target(target: Target) -> None:
    assert 1 <= target.port <= 65535
    assert target.host and target.host.isascii()
    if target.ip is None:
        assert len(target.host) <= 253 and target.host == target.host.lower()
        assert all(0 < len(label) <= 63 for label in target.host.split("."))
    # What the exporter prints (logs, debug) parses back to the same target.
    assert parse_target(str(target), 1) == target


@BOUNDED
@given(_targets)
@example("a:²")  # isdigit() but not int(): was a ValueError (HTTP 500)
@example("a:١٢")  # Arabic-Indic digits: were read as port 12
@example("a:" + "9" * 5000)  # over int()'s 4,300-digit limit
@example("a:000443")
@example("0.:1")  # the name "0", that is 0.0.0.0: printed, it must parse back to the same
@example("\u00b9")  # IDNA maps it to "1", which is 0.0.0.1
def test_parse_target_raises_only_target_error(raw: str) -> None:
    try:
        target = parse_target(raw, 443)
    except TargetError as exc:
        assert "\n" not in str(exc)  # one line, for the HTTP 400 body
        return
    _check_target(target)


def test_port_digits_are_ascii() -> None:
    assert parse_target("a:000443", 1).port == 443
    for raw in ("a:²", "a:١٢", "a:" + "9" * 5000):
        with pytest.raises(TargetError, match="is not a number"):
            parse_target(raw, 443)


@BOUNDED
@given(st.one_of(st.text(), _host))
def test_parse_hostname_raises_only_target_error(raw: str) -> None:
    try:
        name = parse_hostname(raw)
    except TargetError:
        return
    assert name.isascii() and name == name.strip()
    assert parse_hostname(name) == name  # idempotent


# --- config --------------------------------------------------------------------------------------

_KEYS = ["default_module", "modules", "prober", "timeout", "tls_config", "tcp", "ca_file", "cert_file",
         "key_file", "server_name", "insecure_skip_verify", "min_version", "max_version", "starttls",
         "preferred_ip_protocol", "ip_protocol_fallback", "source_ip_address", "proxy_url", "default_port",
         "file", "kubernetes", "tcp", "test", "https", "x"]
# Finite numbers within float range: non-finite and huge timeouts are the regression tests
# below (test_config_timeout_must_be_finite), which need a change in config.py.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.floats(-1e9, 1e9, allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["10s", "0s", "1m30s", "ip4", "ip6", "TLS12", "TLS13", "tcp", "smtp", "http://p:3128",
                     "/nonexistent", "127.0.0.1", "www.example.test"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(_KEYS) | st.integers(0, 3), inner, max_size=4)),
    max_leaves=12,
)



def _either(plausible: st.SearchStrategy, weird: st.SearchStrategy = _scalars) -> st.SearchStrategy:
    # Mostly plausible, so that most documents get past the first check to the next one.
    return st.integers(0, 9).flatmap(lambda i: plausible if i < 8 else weird)


_tls_config = st.fixed_dictionaries({}, optional={
    "server_name": _either(st.sampled_from(["www.example.test", "127.0.0.1", "[::1]", "bad name", "ß.de"])),
    "insecure_skip_verify": _either(st.booleans()),
    "min_version": _either(st.sampled_from(["TLS10", "TLS12", "TLS13", "SSL3"])),
    "max_version": _either(st.sampled_from(["TLS11", "TLS12", "TLS13"])),
    "ca_file": _either(st.sampled_from(["/nonexistent/ca.pem", "/dev/null", "/"])),
})
_tcp_config = st.fixed_dictionaries({}, optional={
    "starttls": _either(st.sampled_from(["smtp", "imap", "ldap", "nope"])),
    "preferred_ip_protocol": _either(st.sampled_from(["ip4", "ip6", "ip5"])),
    "ip_protocol_fallback": _either(st.booleans()),
    "source_ip_address": _either(st.sampled_from(["127.0.0.1", "::1", "1.2.3", "x"])),
    "proxy_url": _either(st.sampled_from(["http://proxy:3128", "http://u:p@proxy:3128", "https://p:1",
                                          "http://proxy", "http://[::1:3128", "http://p:99999"])),
    "default_port": _either(st.integers(-10, 70000)),
})
_module = st.fixed_dictionaries({}, optional={
    "prober": _either(st.sampled_from(["tcp", "file", "kubernetes", "nope"])),
    "timeout": _either(st.one_of(st.sampled_from(["1s", "10s", "500ms", "1m30s", "0s", "-1s", "s", "1h2m"]),
                                 st.floats(0.001, 1e6), st.integers(-5, 10**6))),
    "tls_config": _either(_tls_config, _values),
    "tcp": _either(_tcp_config, _values),
})
_documents = st.fixed_dictionaries(
    {"modules": _either(st.dictionaries(_either(st.sampled_from(["tcp", "a", "x.y"]),
                                                st.sampled_from(["b c", 0, "", "ß"])),
                                        _either(_module, _values), min_size=1, max_size=3), _values)},
    optional={"default_module": _either(st.sampled_from(["tcp", "a", "x.y"]))},
).map(lambda d: yaml.safe_dump(d))


def _check_config(cfg: config.Config) -> None:
    assert cfg.modules and cfg.default_module in cfg.modules
    for module in cfg.modules.values():
        assert math.isfinite(module.timeout) and module.timeout > 0


@BOUNDED
@given(st.one_of(_documents, st.text(max_size=200)))
@example("modules: {a: {timeout: 1m}}")
@example("[[[[[[[[[[]]]]]]]]]]")
def test_load_text_raises_only_config_error(text: str) -> None:
    try:
        cfg = prepare.load_text(text, "prop.yml", base_dir="/nonexistent")
    except config.ConfigError as exc:
        assert str(exc)
        return
    _check_config(cfg)


@pytest.mark.parametrize("timeout", [".nan", ".inf", "1" + "0" * 400])
def test_config_timeout_must_be_finite(timeout: str) -> None:
    # A NaN or infinite timeout loaded fine and gave probes no deadline; a 400-digit one
    # raised OverflowError out of load_text.
    with pytest.raises(config.ConfigError, match=r"modules\.a\.timeout"):
        prepare.load_text(f"modules: {{a: {{timeout: {timeout}}}}}", "prop.yml")


# --- certificates ----------------------------------------------------------------------------------

_ROOT = make_root("Property Root")
_LEAF = _ROOT.issue("www.example.test", dns=("www.example.test", "*.example.test"), ips=("192.0.2.1",))
_CA = make_cert("Property CA", issuer=_ROOT, ca=True)
_SEEDS = [_LEAF.der, _CA.der, _ROOT.der]


@st.composite
def _mutated_der(draw: st.DrawFn) -> bytes:
    der = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(der) - 1)) if der else 0
        if kind == "flip" and der:
            der[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and der:
            der[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF, 0x0C, 0x13, 0x14, 0x1E]))
        elif kind == "insert":
            der[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and der:
            del der[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del der[pos:]
    return bytes(der)


def _expose(result: ProbeResult) -> None:
    families = metrics.probe_families(result)
    text, _ = metrics.encode(families, None)
    parsed = {f.name for f in text_string_to_metric_families(text.decode("utf-8"))}
    assert "ssl_cert_not_after_timestamp_seconds" in parsed
    om, _ = metrics.encode(families, "application/openmetrics-text; version=1.0.0")
    assert list(parse_openmetrics(om.decode("utf-8")))


@BOUNDED
@given(st.one_of(_mutated_der(), st.binary(max_size=300)))
def test_mutated_certificates_raise_only_certificate_error(der: bytes) -> None:
    try:
        info = parse_der(der)
    except CertificateError as exc:
        assert str(exc).startswith("cannot decode certificate")
        return
    assert info.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert math.isfinite(info.not_before) and math.isfinite(info.not_after)
    for text in (info.subject_cn, info.issuer_cn, info.subject, info.issuer, info.serial, *info.dns_names):
        text.encode("utf-8")  # label values must be UTF-8
    _expose(ProbeResult(success=False, duration=0.01, certs=(info,), handshake_success=True,
                        errors=(ProbeError("verify", "bad_certificate"),)))


_NAME_STRINGS = st.tuples(st.sampled_from([0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E]), st.binary(max_size=12))


@BOUNDED
@given(_NAME_STRINGS, st.integers(-(2**200), 2**200))
def test_any_name_bytes_and_serial_parse_or_fail_cleanly(name: tuple[int, bytes], serial: int) -> None:
    """Validly signed certificates whose CN is any bytes under any string type, and any
    serial: the parser never raises anything but CertificateError, the exposition holds."""
    tag, value = name
    der = hostile.patch_certificate(_LEAF.der, _ROOT.key, subject=hostile.der_name_cn(value, tag),
                                    serial=hostile.der_integer(serial))
    try:
        info = parse_der(der)
    except CertificateError:
        return
    assert info.serial == (f"-{-serial:x}" if serial < 0 else f"{serial:x}")
    _expose(ProbeResult(success=True, duration=0.01, certs=(info,), handshake_success=True))


# --- the ServerHello sniffer -----------------------------------------------------------------------


@BOUNDED
@given(st.lists(st.binary(max_size=2000), max_size=8))
def test_sniffer_survives_any_bytes(chunks: list[bytes]) -> None:
    sniffer = tls.ServerHelloSniffer()
    for chunk in chunks:
        sniffer.feed(chunk)
    assert sniffer.version is None or 0 <= sniffer.version <= 0xFFFF
    assert sniffer.cipher_id is None or 0 <= sniffer.cipher_id <= 0xFFFF


@BOUNDED
@given(st.integers(0, 0xFFFF), st.integers(1, 64), st.data())
def test_sniffer_reads_a_server_hello_in_any_fragmentation(cipher: int, step: int, data: st.DataObject) -> None:
    flight = hostile.record(hostile.HANDSHAKE, hostile.server_hello(cipher=cipher))
    sniffer = tls.ServerHelloSniffer()
    for start in range(0, len(flight), step):
        sniffer.feed(flight[start : start + step])
    assert (sniffer.version, sniffer.cipher_id) == (0x0303, cipher)
    # Whatever follows a complete ServerHello changes nothing.
    sniffer.feed(data.draw(st.binary(max_size=200)))
    assert (sniffer.version, sniffer.cipher_id) == (0x0303, cipher)


# --- the (stage, reason) mapping ------------------------------------------------------------------

_exceptions = st.one_of(
    st.builds(OSError, st.integers(0, 200), st.text(max_size=10)),
    st.builds(ssl.SSLError, st.integers(0, 10), st.text(max_size=20)),
    st.builds(ssl.SSLEOFError), st.builds(ssl.SSLZeroReturnError), st.builds(TimeoutError),
    st.builds(socket.gaierror, st.integers(-12, 0), st.text(max_size=10)),
    st.builds(ProbeFailure, st.sampled_from(sorted(REASONS)), st.text(max_size=20)),
    st.builds(ValueError, st.text(max_size=10)), st.builds(RuntimeError), st.builds(EOFError),
    st.builds(ConnectionResetError), st.builds(ConnectionRefusedError), st.builds(ConnectionAbortedError),
)


@BOUNDED
@given(_exceptions, st.sampled_from(STAGES))
def test_every_exception_maps_to_a_documented_reason(exc: BaseException, stage: str) -> None:
    error = classify(exc, stage)
    assert error.stage == stage
    assert error.reason in REASONS
    assert "\n" not in error.detail
