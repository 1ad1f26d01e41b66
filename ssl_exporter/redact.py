"""Credentials in URLs, kept out of everything the exporter shows.

One rule for /config, debug output, the pages, log lines and error messages (a failed
reload's answer, ``--config.check``): the user information of any ``scheme://`` URL is
redacted. With a password, the user name stays and the password goes
(``http://alice:<secret>@proxy:3128``); a user name alone is taken for a token
(``http://<secret>@proxy:3128``), since that is how tokens are put in URLs.
"""

from __future__ import annotations

import re

SECRET = "<secret>"

# A scheme, "://", and the authority up to the path, query, fragment or the end of the word.
_AUTHORITY = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*@)")


def redact_urls(text: str) -> str:
    """``text`` with the user information of every URL in it redacted."""
    if "@" not in text or "://" not in text:  # the common case, cheaply
        return text
    return _AUTHORITY.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    # The host follows the last "@" of the authority (as urlsplit reads it), so a user
    # name or password with an "@" in it is redacted whole.
    userinfo = match.group(2)[:-1]
    if not userinfo:
        return match.group(0)
    user, colon, _password = userinfo.partition(":")
    return match.group(1) + (f"{user}:{SECRET}" if colon and user != SECRET else SECRET) + "@"
