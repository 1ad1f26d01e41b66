"""Text from a server, a certificate or a file, made safe to show on one line.

One escaping for metric label values, notes, debug output and reports: every character
that is not printable (controls, NUL, ESC, format and separator characters, lone
surrogates such as a JSON ``"\\ud800"``) becomes a Python-style ``\\xNN``/``\\uNNNN``/
``\\UNNNNNNNN`` escape. The result is printable and encodes as UTF-8, so it can neither
split a line nor make an encoder raise.

:func:`shorten` is the one way to put free text (an exception's message, a server's
line) on one bounded line; :func:`describe` does it for an exception.
"""

from __future__ import annotations


def printable(text: str, also: str = "") -> str:
    """``text`` with every unprintable character, and each character of ``also``, escaped."""
    if text.isprintable() and not any(ch in text for ch in also):
        return text
    return "".join(ch if ch.isprintable() and ch not in also else escape(ch) for ch in text)


def escape(ch: str) -> str:
    """One character as an escape sequence."""
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def cut(text: str, width: int, marker: str = "…", *, marker_fits: bool = False) -> str:
    """``text`` if it has at most ``width`` characters, else its first ``width`` and ``marker``
    (``width - len(marker)`` and ``marker`` when ``marker_fits``, so the result fits too).

    ``marker`` may name ``{total}`` (the text's length) and ``{cut}`` (characters left out).
    The one place text is cut short; each caller picks the marker its readers already know.
    """
    if len(text) <= width:
        return text
    keep = width
    if marker_fits:  # measured as shown (a count in it may be a digit longer once final)
        keep = max(0, width - len(marker.format(total=len(text), cut=len(text) - width)))
    return text[:keep] + marker.format(total=len(text), cut=len(text) - keep)


def shorten(text: object, width: int | None = None) -> str:
    """``text`` (any object's ``str()``) as one printable line of at most about ``width`` characters.

    Runs of whitespace, line breaks included, become one space; what else is unprintable is
    escaped (:func:`printable`); past ``width`` the line is cut, with a marker saying how
    long it was.
    """
    line = printable(" ".join(str(text).split()))
    return line if width is None else cut(line, width, "... ({total} chars)")


def describe(exc: BaseException, width: int | None = None) -> str:
    """An exception as one line (:func:`shorten`): its message, or its type's name when it has none."""
    return shorten(exc, width) or type(exc).__name__
