"""ssl_exporter.redact: the one rule for credentials in URLs, wherever they are shown."""

from __future__ import annotations

import pytest

from ssl_exporter.redact import redact_urls


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:hunter2@proxy:3128", "http://alice:<secret>@proxy:3128"),
        ("http://TOKEN@proxy:3128", "http://<secret>@proxy:3128"),  # a user name alone is a token
        ("http://alice:@proxy:3128", "http://alice:<secret>@proxy:3128"),
        ("http://:hunter2@proxy:3128", "http://:<secret>@proxy:3128"),
        # urlsplit reads the host after the last "@": whatever is before it is the user information.
        ("http://a@b:c@d@proxy:3128/", "http://a@b:<secret>@proxy:3128/"),
        ("cluster server 'https://tok@k8s:6443' is not", "cluster server 'https://<secret>@k8s:6443' is not"),
        ("first http://u:p@a/ then HTTPS://t@b?x=1", "first http://u:<secret>@a/ then HTTPS://<secret>@b?x=1"),
        ("ws+unix://t@h", "ws+unix://<secret>@h"),
        # No user information: unchanged.
        ("https://example.test/a@b", "https://example.test/a@b"),
        ("https://example.test?mail=a@b", "https://example.test?mail=a@b"),
        ("mailto:a@b.example", "mailto:a@b.example"),
        ("user@host:22", "user@host:22"),
        ("http://@proxy:3128", "http://@proxy:3128"),
        # Already redacted stays as it is.
        ("http://alice:<secret>@proxy", "http://alice:<secret>@proxy"),
        ("http://<secret>@proxy", "http://<secret>@proxy"),
    ],
)
def test_user_information_is_redacted(text: str, shown: str) -> None:
    assert redact_urls(text) == shown
