"""Decoding certificates at rest: the PEM scanner stays linear on hostile input; only regular
files are read; PKCS#12 derivations are bounded."""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from ssl_exporter.sources import SourceError, _pem_blocks, decode_certificates, read_regular
from tests.conftest import PKI

# The regex the scanner replaced: same blocks, but quadratic when BEGIN markers have no END.
_REGEX = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.DOTALL)


@pytest.mark.parametrize("data", [
    b"-----BEGIN CERTIFICATE-----\n" * 40_000,  # ~1 MB, one label, no END
    b"".join(b"-----BEGIN L%d-----\n" % i for i in range(60_000)),  # ~1 MB, every label new
], ids=["same-label", "distinct-labels"])
def test_begin_markers_without_end_are_linear(data: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(SourceError) as caught:
        decode_certificates(data)
    # A generous guard against quadratic time (the regex took minutes here), not a benchmark.
    assert time.perf_counter() - started < 2
    assert caught.value.reason == "no_certificate"


def test_certificates_around_unterminated_blocks_are_read(pki: PKI) -> None:
    data = (b"-----BEGIN X509 CRL-----\n" * 1000 + pki.root.pem + b"-----BEGIN PKCS7-----\n"
            + b"-----BEGIN X509 CRL-----\n" + pki.inter.pem)
    assert decode_certificates(data) == [pki.root.der, pki.inter.der]


def test_bad_base64_is_bad_pem() -> None:
    with pytest.raises(SourceError) as caught:
        decode_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    assert caught.value.reason == "bad_pem"


def test_trusted_certificate_keeps_only_the_certificate(pki: PKI) -> None:
    body = pki.root.pem.replace(b"CERTIFICATE-----", b"TRUSTED CERTIFICATE-----")
    assert decode_certificates(body) == [pki.root.der]


def test_scanner_finds_the_blocks_the_regex_found() -> None:
    pieces = [b"-----BEGIN A-----", b"-----END A-----", b"-----BEGIN B-----", b"-----END B-----",
              b"-----", b"-", b"x", b"\n", b"-----BEGIN a-----", b"-----END ", b"-----BEGIN ", b"A"]
    rng = random.Random(7)
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _pem_blocks(data) == _REGEX.findall(data), data


@pytest.mark.parametrize("special", ["fifo", "/dev/ptmx", "/dev/zero", "/dev/null", "folder"])
def test_read_regular_refuses_anything_but_a_regular_file(special: str, tmp_path: Path) -> None:
    path = special
    if special == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)  # no writer: a blocking open or read would never return
    elif special == "folder":
        path = str(tmp_path)
    with pytest.raises(SourceError) as caught:
        read_regular(path, 1024)
    assert (caught.value.reason, str(caught.value)) == ("not_found", "not a regular file")


def test_read_regular_caps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1025)
    with pytest.raises(SourceError) as caught:
        read_regular(str(path), 1024)
    assert caught.value.reason == "oversized"
    assert read_regular(str(path), 1025)[0] == b"x" * 1025


def test_pkcs12_with_undecodable_data_content_is_refused(pki: PKI) -> None:
    # PFX { 3, ContentInfo { data, [0] { OCTET STRING that is not DER } } }: nothing to check
    # the counts of, so nothing is derived.
    content = b"\x04\x03\x30\x05\x00"
    info = b"\x30" + bytes([13 + len(content)]) + b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01" \
        + b"\xa0" + bytes([len(content)]) + content
    pfx = b"\x30" + bytes([3 + len(info)]) + b"\x02\x01\x03" + info
    with pytest.raises(SourceError) as caught:
        decode_certificates(pfx, "x.p12", None)
    assert caught.value.reason == "bad_pkcs12"
