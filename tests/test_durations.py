"""The one duration formatter: rounded for the pages, the config's syntax for /config."""

from __future__ import annotations

import pytest

from ssl_exporter import yamlrules
from ssl_exporter.durations import format_duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0004, "0.4 ms"), (0.0099, "9.9 ms"), (0.012, "12 ms"), (9.9994, "9999 ms"), (10.0, "10.0 s"),
    (12.46, "12.5 s"),
])
def test_reading_style_rounds_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "0.5s"), (10.0, "10s"), (90.0, "90s"), (1.25, "1.25s")])
def test_config_style_is_read_back_by_the_config_parser(seconds: float, text: str) -> None:
    assert format_duration(seconds, style="config") == text
    assert yamlrules.parse_duration(text) == seconds
