"""Target and verification-name parsing (CONTRACT.md, Targets)."""

from __future__ import annotations

import pytest

from ssl_exporter.targets import Target, TargetError, parse_hostname, parse_target


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        ("example.com:8443", "example.com", 8443),
        ("example.com", "example.com", 443),
        ("Example.COM.", "example.com", 443),
        ("127.0.0.1", "127.0.0.1", 443),
        ("127.0.0.1:25", "127.0.0.1", 25),
        ("[::1]:8443", "::1", 8443),
        ("[2001:db8::1]", "2001:db8::1", 443),
        ("::1", "::1", 443),
        ("https://example.com/path?q=1", "example.com", 443),
        ("https://example.com:8443/", "example.com", 8443),
        ("https://[::1]:9443/x", "::1", 9443),
        ("ldaps://ldap.example.com", "ldap.example.com", 636),
        ("smtp://mx.example.com", "mx.example.com", 25),
        ("bücher.example:443", "xn--bcher-kva.example", 443),
        ("BÜCHER.example", "xn--bcher-kva.example", 443),
        ("_acme.internal:1", "_acme.internal", 1),
        ("a" * 63 + ".example:65535", "a" * 63 + ".example", 65535),
    ],
)
def test_valid_targets(raw: str, host: str, port: int) -> None:
    target = parse_target(raw, default_port=443)
    assert (target.host, target.port) == (host, port)
    assert (target.ip is not None) == (":" in host or host[0].isdigit())


def test_default_port_comes_from_the_module() -> None:
    assert parse_target("mx.example.com", default_port=25) == Target("mx.example.com", 25)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "target is empty"),
        ("   ", "target is empty"),
        ("bad host:443", "contains whitespace"),
        ("host\x00:443", "control characters"),
        ("example.com:0", "port 0 is out of range 1-65535"),
        ("example.com:65536", "port 65536 is out of range 1-65535"),
        ("example.com:https", "port 'https' is not a number"),
        ("example.com:", "port '' is not a number"),
        (":443", "host is empty"),
        ("a" * 64 + ".example", "longer than 63 characters"),
        (("abcdefghi." * 26) + "com", "name longer than 253 characters"),
        ("exa$mple.com", "invalid host name label 'exa$mple'"),
        ("-lead.example", "invalid host name label '-lead'"),
        ("a..b", "invalid host name label ''"),
        ("[::1", "missing ']'"),
        ("[example.com]:443", "is not an IPv6 address"),
        ("2001:db8::1:443x", "put IPv6 addresses in brackets"),
        ("https://", "URL has no host"),
        ("gopher://example.com", "unknown URL scheme 'gopher'"),
        ("https://example.com:99999/", "out of range"),
    ],
)
def test_invalid_targets(raw: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(raw, default_port=443)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "name"),
    [("www.example.com", "www.example.com"), ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"),
     ("Bücher.example", "xn--bcher-kva.example")],
)
def test_valid_hostnames(raw: str, name: str) -> None:
    assert parse_hostname(raw) == name


@pytest.mark.parametrize("raw", ["", "bad name", "a" * 64, "x_y$.com"])
def test_invalid_hostnames(raw: str) -> None:
    with pytest.raises(TargetError):
        parse_hostname(raw)


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("0:8443", "0.0.0.0"),  # what the resolver makes of them (inet_aton), so the policy sees it
        ("0.:8443", "0.0.0.0"),
        ("127.0.0.1.:8443", "127.0.0.1"),
        ("\u2070:8443", "0.0.0.0"),  # superscript zero: IDNA maps it to "0"
        ("\uff10:8443", "0.0.0.0"),  # fullwidth zero
        ("127.1:8443", "127.0.0.1"),
        ("0x7f.1:8443", "127.0.0.1"),
        ("2130706433:8443", "127.0.0.1"),
        ("https://0:8443/", "0.0.0.0"),
        ("[fe80::1%eth0]:8443", "fe80::1%eth0"),
        ("[fe80::1%2]:8443", "fe80::1%2"),
    ],
)
def test_numeric_hosts_and_zone_ids(raw: str, host: str) -> None:
    target = parse_target(raw, 443)
    assert (target.host, target.port, str(target.ip)) == (host, 8443, host)


@pytest.mark.parametrize(
    "raw",
    ["fe80::1%\r\nssl_probe_success 1", "[fe80::1%\u2028forged]", "fe80::1%a|b", "fe80::1%" + "x" * 16,
     "fe80::1%\u0661"],
)
def test_zone_ids_are_validated_like_any_text(raw: str) -> None:
    # ipaddress takes anything after "%": a hostname= with a line break in its zone id forged
    # lines in debug output, the probe log page and check -H output.
    with pytest.raises(TargetError) as caught:
        parse_hostname(raw)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message and "\u2028" not in message
    assert message.endswith("the IPv6 zone id is not an interface name or number "
                            "(letters, digits, '_', '.', '-'; at most 15)")
    with pytest.raises(TargetError):
        parse_target(f"[{raw.strip('[]')}]:443", 443)
