"""Name resolution for the tcp prober: the system resolver, or DNS servers of your choice.

By default a name resolves through the system (``getaddrinfo``: /etc/hosts, nsswitch, the
resolvers of /etc/resolv.conf), as every other program on the host. A module's
``tcp.dns_servers`` (or the ``--dns.server`` flag, for every module that names none) sends
the queries to those servers instead, through dnspython's asyncio resolver: split-horizon
DNS, or a resolver that sees internal names. Those answers carry a precise reason when they
fail (docs/metrics.md):

=============  =====================================================================
nxdomain       the name does not exist (NXDOMAIN)
no_address     the name exists but has no address of an allowed IP family
servfail       every server answered SERVFAIL (or failed otherwise)
refused        a server answered REFUSED
timeout        no answer within ``tcp.dns_timeout`` (or the probe's deadline)
=============  =====================================================================

The system resolver cannot tell these apart reliably (getaddrinfo's EAI_NONAME covers both
a missing name and a missing address), so its failures keep the reason ``dns``, except
``no_address`` when only the IP family is wrong and ``timeout`` past ``tcp.dns_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ssl_exporter.errors import ProbeFailure
from ssl_exporter.printable import describe

if TYPE_CHECKING:  # dnspython is imported where a query is made: most setups never make one
    import dns.asyncresolver
    import dns.exception
    import dns.nameserver

DNS_PORT = 53
# The system resolver's configuration, read by dnspython for CAA lookups without dns_servers.
RESOLV_CONF = "/etc/resolv.conf"
# Servers given by --dns.server, used by every module that names none (set once at start).
_DEFAULT_SERVERS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    """One DNS server to ask: an IP address and a port."""

    address: str
    port: int = DNS_PORT

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def parse_server(text: str) -> Server:
    """``192.0.2.53``, ``192.0.2.53:5353``, ``2001:db8::53`` or ``[2001:db8::53]:5353``.

    An address, never a name: the resolver must not need a resolver. ValueError when bad.
    """
    host, port = text.strip(), DNS_PORT
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not an address, address:port or [v6address]:port")
        if rest:
            port = _port(rest[1:], text)
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        port = _port(port_text, text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{text!r}: a DNS server is given as an IP address, not a name") from None
    return Server(address, port)


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port {text!r} is not in 1-65535")
    return int(text)


def set_default_servers(servers: Sequence[str]) -> None:
    """The ``--dns.server`` flag: servers for modules whose ``tcp.dns_servers`` is empty."""
    global _DEFAULT_SERVERS
    for server in servers:
        parse_server(server)  # ValueError for the caller's usage message
    _DEFAULT_SERVERS = tuple(servers)


def servers_for(configured: Sequence[str]) -> tuple[Server, ...]:
    """The servers a module asks: its own, else the flag's; empty means the system resolver."""
    return tuple(parse_server(s) for s in (configured or _DEFAULT_SERVERS))


@dataclass(frozen=True)
class SystemServers:
    """The name servers of the system's resolver configuration, or why there are none.

    Read once per configuration load (:func:`read_system_servers`), not at every probe on
    the event loop; a host without a usable /etc/resolv.conf (a minimal container) gets
    ``error`` here and the reason ``no_resolver`` at each CAA lookup.
    """

    nameservers: tuple[str | dns.nameserver.Nameserver, ...] = ()
    error: str = ""


def read_system_servers() -> SystemServers:
    """The servers of :data:`RESOLV_CONF` (a missing, unreadable or empty file is ``error``)."""
    import dns.exception
    import dns.resolver
    try:
        return SystemServers(tuple(dns.resolver.Resolver(filename=RESOLV_CONF).nameservers))
    except (dns.exception.DNSException, OSError, ValueError) as exc:  # NoResolverConfiguration mostly
        return SystemServers(error=f"{RESOLV_CONF}: {describe(exc)}")


def make_resolver(servers: Sequence[Server], timeout: float,
                  system: SystemServers | None = None) -> dns.asyncresolver.Resolver:
    """A dnspython resolver asking exactly ``servers`` (no /etc/resolv.conf, no search list),
    or the system's resolv.conf servers when ``servers`` is empty (CAA lookups): ``system``
    as read at load, else read now. NoResolverConfiguration when the system has none."""
    import dns.asyncresolver
    import dns.nameserver
    import dns.resolver
    resolver = dns.asyncresolver.Resolver(configure=False)
    if servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(s.address, s.port) for s in servers]
    else:
        system = system if system is not None else read_system_servers()
        if system.error:
            # dnspython's exceptions take untyped *args.
            raise dns.resolver.NoResolverConfiguration(system.error)  # type: ignore[no-untyped-call]
        resolver.nameservers = list(system.nameservers)
    resolver.lifetime = timeout
    resolver.timeout = timeout
    resolver.cache = None
    return resolver


def failure_reason(exc: dns.exception.DNSException) -> str:
    """The documented reason for a failed DNS query."""
    import dns.exception
    import dns.rcode
    import dns.resolver
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "nxdomain"
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return "no_resolver"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "no_address"
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        rcodes = {_rcode(error) for error in exc.kwargs.get("errors", [])}
        return "refused" if dns.rcode.REFUSED in rcodes else "servfail"
    return "dns"


def _rcode(error: tuple[object, ...]) -> int | None:
    import dns.message
    response = error[-1] if error else None
    return response.rcode() if isinstance(response, dns.message.Message) else None


async def resolve(host: str, port: int, preferred: str, fallback: bool, servers: Sequence[Server],
                  timeout: float) -> list[str]:
    """The addresses of ``host``, the preferred IP family (``ip4``/``ip6``) first.

    Without ``fallback`` only the preferred family is asked for. Raises ProbeFailure with a
    documented reason when no address results.
    """
    if not servers:
        return await _system(host, port, preferred, fallback, timeout)
    families = ["AAAA", "A"] if preferred == "ip6" else ["A", "AAAA"]
    if not fallback:
        families = families[:1]
    import dns.exception
    import dns.name
    resolver = make_resolver(servers, timeout)
    name = dns.name.from_text(host)  # absolute: no search list
    answers = await asyncio.gather(*(resolver.resolve(name, rdtype, search=False) for rdtype in families),
                                   return_exceptions=True)
    addresses: list[str] = []
    failures: list[dns.exception.DNSException] = []
    for answer in answers:
        if isinstance(answer, dns.exception.DNSException):
            failures.append(answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            addresses += [str(ipaddress.ip_address(r.address)) for r in answer if str(r.address) not in addresses]
    if addresses:
        return list(dict.fromkeys(addresses))
    reasons = [failure_reason(exc) for exc in failures]
    # The most telling reason: a missing name, then a server's failure, then no address.
    for reason in ("nxdomain", "refused", "servfail", "timeout", "dns", "no_address"):
        if reason in reasons:
            detail = "; ".join(f"{rdtype}: {describe(exc)}" for rdtype, exc in zip(families, failures, strict=False))
            raise ProbeFailure(reason, f"{host} via {', '.join(map(str, servers))}: {detail}")
    raise ProbeFailure("no_address", f"{host} has no {preferred} address and ip_protocol_fallback is off")


async def _system(host: str, port: int, preferred: str, fallback: bool, timeout: float) -> list[str]:
    family = socket.AF_INET6 if preferred == "ip6" else socket.AF_INET
    try:  # getaddrinfo itself cannot be stopped: its thread finishes later, unwaited for
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise ProbeFailure("timeout", f"{host}: no answer from the system resolver within {timeout:g}s "
                                      "(tcp.dns_timeout or the probe's deadline)") from None
    addresses: list[str] = []
    for info_family, *_, sockaddr in sorted(infos, key=lambda info: info[0] != family):
        if (info_family == family or fallback) and str(sockaddr[0]) not in addresses:
            addresses.append(str(sockaddr[0]))
    if not addresses:
        raise ProbeFailure("no_address", f"{host} has no {preferred} address and ip_protocol_fallback is off")
    return addresses
