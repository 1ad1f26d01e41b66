"""Decoding certificates at rest: the PEM scanner stays linear on hostile input."""

from __future__ import annotations

import random
import re
import time

import pytest

from ssl_exporter.sources import SourceError, _pem_blocks, decode_certificates
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
