"""STARTTLS dialogues: data, one table, run by one runner.

Each protocol's dialogue is a :class:`Dialogue` in :data:`DIALOGUES`; :func:`negotiate`
runs it over an open connection until the server is ready for the TLS handshake. The
line-based protocols (SMTP, LMTP, IMAP, POP3, FTP, NNTP, ManageSieve) are pure data,
:class:`LineDialogue` tables of :class:`Step` run by one runner; XMPP is an XML stream and
PostgreSQL, MySQL and LDAP are binary, so theirs are small functions in the same table.

Every read goes through a :class:`Conversation`, which bounds it: one line or message at
most :data:`MAX_MESSAGE_BYTES`, the whole dialogue at most :data:`MAX_DIALOGUE_BYTES`
(reason ``oversized``). Time is bounded by the probe's deadline, applied by the caller.

Reads stop exactly at the end of the server's go-ahead (``readuntil``/``readexactly``,
never ``read(n)``): the TLS handshake that follows reads the same StreamReader, so
nothing of it must be consumed here.

Failures raise ``ProbeFailure`` with ``starttls_unsupported`` (STARTTLS not offered),
``starttls_refused`` (a well-formed "no"), ``starttls_protocol`` (a reply we cannot
understand) or ``oversized``; a peer that hangs up raises ``EOFError`` (reason ``closed``).
"""

from __future__ import annotations

import asyncio
import re
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from ssl_exporter import der
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.printable import shorten

# One line of a text protocol, or one binary message. Real replies are far shorter (an
# SMTP reply line is at most 512 bytes); the bound only stops a hostile or broken peer.
MAX_MESSAGE_BYTES = 4 * 1024
# Everything the server may send before its go-ahead.
MAX_DIALOGUE_BYTES = 64 * 1024
# The probe log keeps the dialogue readable without letting a chatty server flood it.
MAX_NOTED_LINES = 100
MAX_NOTE_CHARS = 200
# Our name in EHLO/LHLO: FQDN-shaped, as RFC 5321 asks, and reserved so it claims nobody's.
CLIENT_NAME = "ssl-exporter.invalid"

UNSUPPORTED = "starttls_unsupported"
REFUSED = "starttls_refused"
PROTOCOL = "starttls_protocol"


class Conversation:
    """One dialogue's connection: bounded reads, writes, and the probe-log notes of both."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, note: Callable[[str], None]
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._note = note
        self._received = 0
        self._noted_lines = 0
        self._awaiting = "the greeting"  # what the next read waits for, for error messages

    async def send(self, data: bytes, shown: str) -> None:
        self._note(f"C: {clip(shown)}")
        self._awaiting = f"the reply to {clip(shown, 40)}"
        self._writer.write(data)
        await self._writer.drain()

    async def send_line(self, line: str) -> None:
        await self.send(line.encode("utf-8") + b"\r\n", line)

    async def read_line(self) -> str:
        """One line without its CRLF, noted in the probe log."""
        raw = await self.read_until(b"\n")
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        self.note_received(line)
        return line

    async def read_until(self, separator: bytes) -> bytes:
        try:
            data = await self._reader.readuntil(separator)
        except asyncio.LimitOverrunError:
            # Past the stream's own buffer limit (64 KiB by default), which is above ours.
            raise self._too_long("a line") from None
        except asyncio.IncompleteReadError as exc:
            raise self._closed(exc) from None
        if len(data) > MAX_MESSAGE_BYTES:
            raise self._too_long(f"a line of {len(data)} bytes")
        self._charge(len(data))
        return data

    async def read_exactly(self, size: int) -> bytes:
        if size > MAX_MESSAGE_BYTES:  # judged before reading: the size is announced
            raise self._too_long(f"a message of {size} bytes")
        try:
            data = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise self._closed(exc) from None
        self._charge(size)
        return data

    def note_received(self, text: str) -> None:
        self._noted_lines += 1
        if self._noted_lines <= MAX_NOTED_LINES:
            self._note(f"S: {clip(text)}")
        elif self._noted_lines == MAX_NOTED_LINES + 1:
            self._note(f"S: (further lines not logged, limit {MAX_NOTED_LINES})")

    def _charge(self, size: int) -> None:
        self._received += size
        if self._received > MAX_DIALOGUE_BYTES:
            raise ProbeFailure("oversized", f"the server sent over {MAX_DIALOGUE_BYTES} bytes before TLS")

    def _too_long(self, what: str) -> ProbeFailure:
        return ProbeFailure("oversized", f"{self._awaiting}: {what}, over the {MAX_MESSAGE_BYTES}-byte limit")

    def _closed(self, exc: asyncio.IncompleteReadError) -> EOFError:
        partial = f" after {len(exc.partial)} bytes of it" if exc.partial else ""
        return EOFError(f"the server closed the connection while we waited for {self._awaiting}{partial}")


def clip(text: str, width: int = MAX_NOTE_CHARS) -> str:
    """One printable log line of at most about ``width`` characters (printable.shorten)."""
    return shorten(text, width)


DialogueRunner = Callable[[Conversation, str], Awaitable[None]]


@dataclass(frozen=True)
class Dialogue:
    """A STARTTLS protocol: its port, and what runs it (given the server name)."""

    default_port: int
    run: DialogueRunner


# --- line-based protocols: data ------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command and its reply, or the greeting when ``send`` is None."""

    send: str | None
    ok: frozenset[str]  # status words that let the dialogue go on
    # The reply ends at the first line matching this; None: the reply is one line.
    last_line: re.Pattern[str] | None = None
    # After a positive status line comes a listing that ends with a line ".".
    listing: bool = False
    # A reply line that proves the server offers STARTTLS; none of them: starttls_unsupported.
    offer: re.Pattern[str] | None = None
    # Status words that mean something other than starttls_refused.
    verdicts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LineDialogue:
    """A CRLF line protocol: its steps, and how to find the status word of a reply."""

    status: re.Pattern[str]  # matched on the status line; group 1 is the status word
    steps: tuple[Step, ...]

    async def __call__(self, conversation: Conversation, server_name: str) -> None:
        for step in self.steps:
            await self._run(conversation, step)

    async def _run(self, conversation: Conversation, step: Step) -> None:
        what = "the greeting" if step.send is None else f"the reply to {step.send!r}"
        if step.send is not None:
            await conversation.send_line(step.send)
        lines = [await conversation.read_line()]
        if step.last_line is not None:
            while not step.last_line.match(lines[-1]):
                lines.append(await conversation.read_line())
        match = self.status.match(lines[-1])
        if match is None:
            raise ProbeFailure(PROTOCOL, f"unexpected {what}: {clip(lines[-1], 100)!r}")
        status = match.group(1).upper()
        if status not in step.ok:
            raise ProbeFailure(step.verdicts.get(status, REFUSED), f"{what} is {clip(lines[-1], 100)!r}")
        if step.listing:
            while (line := await conversation.read_line()) != ".":
                lines.append(line)
        if step.offer is not None and not any(step.offer.match(line) for line in lines):
            raise ProbeFailure(UNSUPPORTED, f"STARTTLS is not among the capabilities in {what}")


def _words(*words: str) -> frozenset[str]:
    return frozenset(words)


# SMTP, LMTP, FTP and NNTP: a reply line starts with a three-digit code; a multi-line reply
# continues with "NNN-" (FTP: any line) and ends with "NNN " or a bare "NNN".
_CODE = re.compile(r"(\d{3})(?:[ -]|$)")
_CODE_LAST = re.compile(r"\d{3}(?: |$)")
_ESMTP_MISSING = {"500": UNSUPPORTED, "502": UNSUPPORTED}  # EHLO unknown: no extensions at all


def _smtp(hello: str) -> LineDialogue:
    """RFC 3207 STARTTLS after EHLO (SMTP, submission) or LHLO (LMTP, RFC 2033)."""
    return LineDialogue(_CODE, (
        Step(None, _words("220"), _CODE_LAST),
        Step(f"{hello} {CLIENT_NAME}", _words("250"), _CODE_LAST,
             offer=re.compile(r"250[ -]STARTTLS\b", re.IGNORECASE), verdicts=_ESMTP_MISSING),
        Step("STARTTLS", _words("220"), _CODE_LAST),
    ))


# RFC 3501 section 6.2.1. The greeting is untagged ("* OK"); "* PREAUTH" forbids STARTTLS.
_IMAP = LineDialogue(re.compile(r"\S+ (OK|NO|BAD|BYE|PREAUTH)\b", re.IGNORECASE), (
    Step(None, _words("OK")),
    Step("a1 CAPABILITY", _words("OK"), re.compile(r"a1 "),
         offer=re.compile(r"\* CAPABILITY .*\bSTARTTLS\b", re.IGNORECASE)),
    Step("a2 STARTTLS", _words("OK"), re.compile(r"a2 ")),
))

# RFC 2595 section 4 (STLS) and RFC 2449 (CAPA). A server without CAPA answers -ERR.
_POP3 = LineDialogue(re.compile(r"(\+OK|-ERR)\b", re.IGNORECASE), (
    Step(None, _words("+OK")),
    Step("CAPA", _words("+OK"), listing=True, offer=re.compile(r"STLS\b", re.IGNORECASE),
         verdicts={"-ERR": UNSUPPORTED}),
    Step("STLS", _words("+OK")),
))

# RFC 4217: AUTH TLS, 234 to go ahead; "not implemented" codes mean no TLS at all.
_FTP = LineDialogue(_CODE, (
    Step(None, _words("220"), _CODE_LAST),
    Step("AUTH TLS", _words("234"), _CODE_LAST,
         verdicts={"500": UNSUPPORTED, "502": UNSUPPORTED, "504": UNSUPPORTED}),
))

# RFC 4642 and RFC 3977: greeting 200/201, CAPABILITIES 101 + listing, STARTTLS 382.
_NNTP = LineDialogue(_CODE, (
    Step(None, _words("200", "201")),
    Step("CAPABILITIES", _words("101"), listing=True, offer=re.compile(r"STARTTLS\b", re.IGNORECASE),
         verdicts={"500": UNSUPPORTED}),
    Step("STARTTLS", _words("382")),
))

# RFC 5804: the greeting is the capability list, one quoted capability a line, then OK.
_SIEVE_END = re.compile(r"(OK|NO|BYE)\b", re.IGNORECASE)
_SIEVE = LineDialogue(_SIEVE_END, (
    Step(None, _words("OK"), _SIEVE_END, offer=re.compile(r'"STARTTLS"', re.IGNORECASE)),
    Step("STARTTLS", _words("OK"), _SIEVE_END),
))


# --- XMPP: an XML stream ---------------------------------------------------------------

_STREAMS_NS = "http://etherx.jabber.org/streams"
_TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
_STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
_FEATURES = f"{{{_STREAMS_NS}}}features"
_STREAM_ERROR = f"{{{_STREAMS_NS}}}error"
_PROCEED = f"{{{_TLS_NS}}}proceed"
_FAILURE = f"{{{_TLS_NS}}}failure"
_XMPP_STARTTLS = f"<starttls xmlns='{_TLS_NS}'/>"


@dataclass(frozen=True)
class XMPPDialogue:
    """RFC 6120 section 5: stream header, features with <starttls/>, <starttls/>, <proceed/>."""

    namespace: str  # jabber:client or jabber:server

    async def __call__(self, conversation: Conversation, server_name: str) -> None:
        header = (f"<?xml version='1.0'?><stream:stream to={quoteattr(server_name)} version='1.0' "
                  f"xmlns='{self.namespace}' xmlns:stream='{_STREAMS_NS}'>")
        await conversation.send(header.encode("utf-8"), header)
        stream = _XMLStream(conversation)
        features = await stream.next_child({_FEATURES})
        if features.find(f"{{{_TLS_NS}}}starttls") is None:
            offered = ", ".join(_local_name(child.tag) for child in features) or "none"
            raise ProbeFailure(UNSUPPORTED, f"no <starttls/> in the stream features (offered: {offered})")
        await conversation.send(_XMPP_STARTTLS.encode("ascii"), _XMPP_STARTTLS)
        answer = await stream.next_child({_PROCEED, _FAILURE})
        if answer.tag == _FAILURE:
            raise ProbeFailure(REFUSED, "the server answered <failure/> to <starttls/>")


class _XMLStream:
    """The server's half of an XMPP stream, read one tag at a time.

    Reading up to each ">" (and no further) keeps the bytes after <proceed/>, the
    server's TLS records, in the StreamReader for the handshake.
    """

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self._parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(("start", "end"))
        self._depth = 0

    async def next_child(self, wanted: set[str]) -> ElementTree.Element:
        """The next complete child of <stream:stream> whose tag is in ``wanted``."""
        while True:
            chunk = await self._conversation.read_until(b">")
            text = chunk.decode("utf-8", "replace").strip()
            if text:
                self._conversation.note_received(text)
            try:
                self._parser.feed(chunk)
                flush = getattr(self._parser, "flush", None)
                if flush is not None:
                    flush()  # expat >= 2.6 may defer parsing a token (Python 3.13+, 3.12.3+)
                events = list(self._parser.read_events())
            except ElementTree.ParseError as exc:
                raise ProbeFailure(PROTOCOL, f"malformed XML from the server: {exc}") from None
            for event in events:
                kind, element = event[0], event[-1]
                if not isinstance(element, ElementTree.Element):
                    continue  # only "start" and "end" were asked for
                if kind == "start":
                    self._depth += 1
                    if self._depth == 1:
                        self._check_header(element)
                    continue
                self._depth -= 1
                if self._depth == 0:
                    raise EOFError("the server closed the XMPP stream")
                if self._depth > 1:
                    continue
                if element.tag == _STREAM_ERROR:
                    conditions = [_local_name(c.tag) for c in element if c.tag.startswith(f"{{{_STREAM_ERRORS_NS}}}")]
                    raise ProbeFailure(REFUSED, f"stream error: {', '.join(conditions) or 'unspecified'}")
                if element.tag in wanted:
                    return element

    @staticmethod
    def _check_header(element: ElementTree.Element) -> None:
        if element.tag != f"{{{_STREAMS_NS}}}stream":
            raise ProbeFailure(PROTOCOL, f"expected <stream:stream>, got <{element.tag}>")
        # Servers before XMPP 1.0 (no version) send no stream features, hence no STARTTLS.
        if not element.get("version", "").startswith("1."):
            raise ProbeFailure(UNSUPPORTED, "the server's stream has no version 1.x: no stream features")


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


# --- PostgreSQL ----------------------------------------------------------------------

# Protocol 3 SSLRequest: length 8, then the code 1234 << 16 | 5679.
_PG_SSL_REQUEST = struct.pack("!II", 8, 80877103)


async def _postgres(conversation: Conversation, server_name: str) -> None:
    """The server answers one byte: S (go ahead) or N (SSL off)."""
    await conversation.send(_PG_SSL_REQUEST, "SSLRequest")
    answer = await conversation.read_exactly(1)
    if answer == b"S":
        conversation.note_received("S (SSL accepted)")
        return
    conversation.note_received(repr(answer))
    if answer == b"N":
        # N is the only way the server says so: it has SSL turned off (ssl = off).
        raise ProbeFailure(UNSUPPORTED, "the server answered N to SSLRequest: SSL is not enabled")
    raise ProbeFailure(PROTOCOL, f"unexpected answer to SSLRequest: {answer!r}")


# --- MySQL / MariaDB -------------------------------------------------------------------

_CLIENT_PROTOCOL_41 = 0x0200
_CLIENT_SSL = 0x0800
_CLIENT_SECURE_CONNECTION = 0x8000
_MYSQL_MAX_PACKET = 16 * 1024 * 1024
_MYSQL_UTF8 = 33  # utf8_general_ci: understood by every server version


async def _mysql(conversation: Conversation, server_name: str) -> None:
    """Read the server's handshake; if it offers CLIENT_SSL, send an SSLRequest packet."""
    sequence, payload = await _mysql_packet(conversation)
    if payload[:1] == b"\xff":  # an error packet instead of the handshake
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:].decode("utf-8", "replace")
        conversation.note_received(f"error {code}: {message}")
        raise ProbeFailure(REFUSED, f"the server sent error {code} instead of its handshake: {clip(message, 100)}")
    version, capabilities = _mysql_handshake(payload)
    conversation.note_received(f"handshake: server {version}, capabilities {capabilities:#010x}")
    if not capabilities & _CLIENT_SSL:
        raise ProbeFailure(UNSUPPORTED, f"server {version} does not offer CLIENT_SSL")
    if not capabilities & _CLIENT_PROTOCOL_41:
        raise ProbeFailure(PROTOCOL, f"server {version} does not speak protocol 4.1")
    flags = _CLIENT_PROTOCOL_41 | _CLIENT_SSL | (capabilities & _CLIENT_SECURE_CONNECTION)
    request = struct.pack("<IIB23x", flags, _MYSQL_MAX_PACKET, _MYSQL_UTF8)
    header = len(request).to_bytes(3, "little") + bytes([(sequence + 1) & 0xFF])
    await conversation.send(header + request, f"SSLRequest (capabilities {flags:#010x})")


async def _mysql_packet(conversation: Conversation) -> tuple[int, bytes]:
    header = await conversation.read_exactly(4)
    length = int.from_bytes(header[:3], "little")
    return header[3], await conversation.read_exactly(length)


def _mysql_handshake(payload: bytes) -> tuple[str, int]:
    """(server version, capability flags) of a HandshakeV10 packet."""
    if payload[:1] != b"\x0a":
        raise ProbeFailure(PROTOCOL, f"not a MySQL handshake (protocol byte {payload[:1]!r})")
    end = payload.find(b"\x00", 1)
    if end < 0:
        raise ProbeFailure(PROTOCOL, "malformed MySQL handshake: unterminated server version")
    version = payload[1:end].decode("utf-8", "replace")
    # connection id (4), auth-plugin-data part 1 (8), filler (1), capabilities low (2),
    # then optionally charset (1), status (2), capabilities high (2).
    low_at = end + 1 + 4 + 8 + 1
    if len(payload) < low_at + 2:
        raise ProbeFailure(PROTOCOL, "malformed MySQL handshake: too short")
    capabilities = int.from_bytes(payload[low_at:low_at + 2], "little")
    high_at = low_at + 2 + 1 + 2
    if len(payload) >= high_at + 2:
        capabilities |= int.from_bytes(payload[high_at:high_at + 2], "little") << 16
    return version, capabilities


# --- LDAP ------------------------------------------------------------------------------

_LDAP_START_TLS_OID = b"1.3.6.1.4.1.1466.20037"
_LDAP_NOTICE_OF_DISCONNECTION_OID = b"1.3.6.1.4.1.1466.20036"
_BER_INTEGER, _BER_OCTETS, _BER_ENUMERATED, _BER_SEQUENCE = 0x02, 0x04, 0x0A, 0x30
_LDAP_EXTENDED_REQUEST, _LDAP_EXTENDED_RESPONSE = 0x77, 0x78  # [APPLICATION 23/24], constructed
_LDAP_REQUEST_NAME, _LDAP_RESPONSE_NAME = 0x80, 0x8A  # [0] and [10], primitive
_LDAP_RESULT_NAMES = {
    0: "success", 1: "operationsError", 2: "protocolError", 51: "busy", 52: "unavailable",
    53: "unwillingToPerform", 80: "other",
}


def _ber(tag: int, content: bytes) -> bytes:
    """A BER element; the contents we encode are all shorter than 128 bytes."""
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


# LDAPMessage { messageID 1, ExtendedRequest { requestName StartTLS } } (RFC 4511 4.14.1)
_LDAP_START_TLS = _ber(_BER_SEQUENCE, _ber(_BER_INTEGER, b"\x01")
                       + _ber(_LDAP_EXTENDED_REQUEST, _ber(_LDAP_REQUEST_NAME, _LDAP_START_TLS_OID)))


async def _ldap(conversation: Conversation, server_name: str) -> None:
    """Send the StartTLS extended request; resultCode success (0) means go ahead."""
    await conversation.send(_LDAP_START_TLS, "ExtendedRequest StartTLS (1.3.6.1.4.1.1466.20037)")
    head = await conversation.read_exactly(2)
    if head[0] != _BER_SEQUENCE:
        raise ProbeFailure(PROTOCOL, f"not an LDAP message (first byte {head[0]:#04x})")
    extra = await conversation.read_exactly(_ber_length_octets(head[1]))
    message = await conversation.read_exactly(_ber_length(head[1], extra))
    elements = _ber_elements(message)
    if len(elements) < 2 or elements[0][0] != _BER_INTEGER or elements[1][0] != _LDAP_EXTENDED_RESPONSE:
        raise ProbeFailure(PROTOCOL, "the server's answer is not an LDAP ExtendedResponse")
    message_id = int.from_bytes(elements[0][1], "big")
    fields = _ber_elements(elements[1][1])
    if len(fields) < 3 or fields[0][0] != _BER_ENUMERATED or fields[2][0] != _BER_OCTETS:
        raise ProbeFailure(PROTOCOL, "malformed LDAP ExtendedResponse")
    code = int.from_bytes(fields[0][1], "big")
    diagnostic = fields[2][1].decode("utf-8", "replace")
    result = f"resultCode {code} ({_LDAP_RESULT_NAMES.get(code, 'error')})" + (f": {diagnostic}" if diagnostic else "")
    conversation.note_received(f"ExtendedResponse {result}")
    names = [value for tag, value in fields[3:] if tag == _LDAP_RESPONSE_NAME]
    if message_id == 0 or _LDAP_NOTICE_OF_DISCONNECTION_OID in names:
        raise ProbeFailure(REFUSED, f"the server sent a notice of disconnection, {result}")
    if message_id != 1:
        raise ProbeFailure(PROTOCOL, f"an LDAP response to message {message_id}, not to our request 1")
    if code == 2:  # protocolError: RFC 4511 4.12, the server does not know the StartTLS operation
        raise ProbeFailure(UNSUPPORTED, f"StartTLS answered with {result}")
    if code != 0:
        raise ProbeFailure(REFUSED, f"StartTLS answered with {result}")


def _ber_length_octets(first: int) -> int:
    """How many length octets follow the first one (long form), 0 for the short form."""
    try:
        return der.length_octets(first)
    except der.DERError:
        raise ProbeFailure(PROTOCOL, f"unsupported BER length form ({first:#04x})") from None


def _ber_length(first: int, extra: bytes) -> int:
    return int.from_bytes(extra, "big") if extra else first


def _ber_elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each element in ``data``, one level deep."""
    elements = []
    at = 0
    while at < len(data):
        try:
            tag, length, start = der.header(data, at)
        except der.Truncated:
            raise ProbeFailure(PROTOCOL, "truncated BER element") from None
        except der.DERError:
            raise ProbeFailure(PROTOCOL, f"unsupported BER length form ({data[at + 1]:#04x})") from None
        if start + length > len(data):
            raise ProbeFailure(PROTOCOL, "truncated BER element")
        elements.append((tag, data[start:start + length]))
        at = start + length
    return elements


# --- the table ---------------------------------------------------------------------------

DIALOGUES: dict[str, Dialogue] = {
    "smtp": Dialogue(25, _smtp("EHLO")),
    "lmtp": Dialogue(24, _smtp("LHLO")),
    "imap": Dialogue(143, _IMAP),
    "pop3": Dialogue(110, _POP3),
    "ftp": Dialogue(21, _FTP),
    "nntp": Dialogue(119, _NNTP),
    "sieve": Dialogue(4190, _SIEVE),
    "xmpp": Dialogue(5222, XMPPDialogue("jabber:client")),
    "xmpp-server": Dialogue(5269, XMPPDialogue("jabber:server")),
    "postgres": Dialogue(5432, _postgres),
    "mysql": Dialogue(3306, _mysql),
    "ldap": Dialogue(389, _ldap),
}


async def negotiate(
    protocol: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    server_name: str,
    note: Callable[[str], None],
) -> None:
    """Run ``protocol``'s dialogue until the server is ready for the TLS handshake.

    Raises ``ProbeFailure`` (a starttls_* reason, or oversized), ``EOFError`` when the
    server hangs up, or ``OSError`` on network trouble. Cancellation (the probe's
    deadline) passes through untouched.
    """
    note(f"STARTTLS dialogue: {protocol}")
    await DIALOGUES[protocol].run(Conversation(reader, writer, note), server_name)
    note("server ready for the TLS handshake")
