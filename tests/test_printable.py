"""The one text shortener (printable.shorten / describe), shared by tls, starttls, resolve, revocation, errors."""

from __future__ import annotations

import ssl

from ssl_exporter import errors, starttls, tls
from ssl_exporter.printable import cut, describe, shorten


def test_shorten_folds_escapes_and_cuts() -> None:
    assert shorten("a\r\n  b\tc") == "a b c"
    assert shorten("nul\x00 esc\x1b[31m") == "nul\\x00 esc\\x1b[31m"
    assert shorten("x" * 50, 10) == "x" * 10 + "... (50 chars)"
    assert shorten("x" * 10, 10) == "x" * 10
    assert shorten(ValueError("bad\nthing")) == "bad thing"


def test_describe_names_an_exception_without_a_message() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(OSError("refused\n")) == "refused"


def test_users_share_it() -> None:
    # The STARTTLS notes, OpenSSL messages and probe error details all come out of it.
    assert starttls.clip("* OK\r\n" + "y" * 300) == shorten("* OK\r\n" + "y" * 300, starttls.MAX_NOTE_CHARS)
    error = ssl.SSLError(1, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl\nfound (_ssl.c:4149)")
    assert tls._short(error) == "no certificate or crl found"
    assert errors.classify(OSError("reset\r\nby peer"), "connect").detail == "reset by peer"


def test_cut_keeps_short_text_and_marks_what_it_cut() -> None:
    assert cut("abc", 3) == "abc"
    assert cut("abcdef", 3) == "abc…"
    assert cut("abcdef", 3, "...({cut} more)") == "abc...(3 more)"
    assert cut("abcdef", 4, marker_fits=True) == "abc…"  # check's table cells: the marker fits the width
    fitted = cut("x" * 50, 20, " [{total}]", marker_fits=True)  # a counted marker fits as shown
    assert fitted == "x" * 15 + " [50]" and len(fitted) == 20
