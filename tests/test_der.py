"""The one DER header reader (ssl_exporter.der), shared by sources, revocation and starttls."""

from __future__ import annotations

import pytest

from ssl_exporter import der
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.starttls import _ber_elements


def test_short_and_long_form_lengths() -> None:
    assert der.header(b"\x30\x03abc") == (0x30, 3, 2)
    long_body = b"x" * 300
    element = b"\x04\x82\x01\x2c" + long_body + b"rest"
    assert der.header(element) == (0x04, 300, 4)
    assert der.tlv(element) == (0x04, long_body, b"rest")
    view = memoryview(element)
    tag, value, rest = der.tlv(view)
    assert (tag, bytes(value), bytes(rest)) == (0x04, long_body, b"rest")
    assert isinstance(value, memoryview)  # a view stays a view: the CRL's signed part is not copied


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x82\x01", b"\x30\x05abc"])
def test_truncated_elements_are_errors(data: bytes) -> None:
    with pytest.raises(der.DERError, match="truncated DER"):
        der.tlv(data)


@pytest.mark.parametrize("first", [0x80, 0x85, 0xFF])
def test_indefinite_and_over_long_length_forms_are_refused(first: int) -> None:
    with pytest.raises(der.DERError, match="unsupported length form"):
        der.length_octets(first)
    with pytest.raises(der.DERError):
        der.header(bytes([0x30, first]) + b"\x00" * 8)


def test_header_checks_only_the_header_within_end() -> None:
    assert der.header(b"\x30\x7f", 0) == (0x30, 0x7F, 2)  # the content may lie past the data
    with pytest.raises(der.DERError):
        der.header(b"zz\x30\x82\x01\x00", 2, end=5)  # the length octets pass ``end``
    assert der.header(b"zz\x30\x82\x01\x00", 2) == (0x30, 256, 6)


def test_ldap_answers_cut_short_or_in_an_unread_length_form_are_protocol_errors() -> None:
    assert _ber_elements(bytes([0x02, 0x01, 0x05, 0x04, 0x82, 0x00, 0x01, 0x41])) == [(0x02, b"\x05"), (0x04, b"A")]
    for data, message in ((bytes([0x02]), "truncated BER element"),
                          (bytes([0x04, 0x82, 0x00]), "truncated BER element"),
                          (bytes([0x04, 0x03, 0x41]), "truncated BER element"),
                          (bytes([0x30, 0x80, 0x00, 0x00]), "unsupported BER length form (0x80)")):
        with pytest.raises(ProbeFailure) as caught:
            _ber_elements(data)
        assert str(caught.value).endswith(message) and caught.value.reason == "starttls_protocol"
