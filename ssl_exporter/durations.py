"""Durations in words: the one formatter of a probe's or a setting's duration, and the span
left on a certificate.

Both spellings of :func:`format_duration` are shown to users and kept: the pages round a
probe's duration for reading ("12 ms"), while /config writes a setting the way the
configuration file spells it ("1.5s"), so that it can be pasted back.
"""

from __future__ import annotations

from typing import Literal

DurationStyle = Literal["reading", "config"]


def format_duration(seconds: float, *, style: DurationStyle = "reading") -> str:
    """``seconds`` rounded for reading ("0.4 ms", "12 ms", "12.5 s"), or with
    ``style="config"`` in the configuration's own syntax ("0.5s", "90s")."""
    if style == "config":
        return f"{seconds:g}s"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def format_span(seconds: float) -> str:
    """A duration as people read it on a certificate: '3d 4h', '5h 12m', '42s'."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
