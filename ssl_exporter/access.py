"""Target restrictions: which hosts and addresses a ``tcp`` probe may connect to.

``target_policy`` blocks, at the top of the configuration and in a ``tcp`` module, say which
target names (shell-style globs) and which addresses (CIDRs) are allowed or denied. A module
is governed by the global block *and* its own: a target must pass both, so a module can only
narrow what the global policy allows, and a deny anywhere wins (docs/security.md).

Two checks, both raising :class:`TargetRefused` (HTTP 403, never a probe):

- :meth:`Policy.check_target` on the parsed target, before any probe: name globs, and the
  address of an IP-address target. Nothing is resolved here.
- :meth:`Policy.check_addresses` in the ``tcp`` prober on the very addresses it resolved and
  is about to connect to (``probers/tcp.py``), so a name that resolves into a denied range
  is refused, and there is no second resolution whose answer could differ (DNS rebinding).

Through a proxy the proxy resolves the name: only the globs, and an IP-address target's
address, can be checked then.

Every address is checked in each form that reaches an IPv4 address (IPv4-mapped,
-compatible and -translated, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``), and an unspecified
address (``0.0.0.0/8``, ``::``, in any of those forms), which Linux connects to the local
host, is refused outright under any policy. CIDR rules may name ports
(``127.0.0.1:8443``, ``[::1]:8443``, ``10.0.0.0/8:8000-8999``), and ``except_cidrs`` lifts a
block's own ``deny_cidrs`` for the entries it lists.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ssl_exporter import reasons
from ssl_exporter.errors import ProbeAborted
from ssl_exporter.targets import Target

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What ``deny_link_local: true`` denies: link-local ranges, where the clouds' instance
# metadata services live, and the metadata addresses that are elsewhere.
LINK_LOCAL_AND_METADATA: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OpenStack, Oracle metadata (169.254.169.254)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6 (Nitro)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer / platform DNS
    )
)

# Values of the ``reason`` label of ssl_exporter_probes_refused_total: a finite set.
REASONS = reasons.REFUSED  # the registry lives in reasons.py

POLICY_KEYS = ("allow_hosts", "deny_hosts", "allow_cidrs", "deny_cidrs", "except_cidrs", "deny_link_local")

# Addresses that Linux connects to the local host: 0.0.0.0 (and, depending on the kernel,
# the rest of 0.0.0.0/8, "this network") and the IPv6 unspecified address ::.
UNSPECIFIED: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))

# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at (besides
# IPv4-mapped ::ffff:0:0/96 and 6to4 2002::/16, which ipaddress decodes itself).
_EMBEDDED_IPV4: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT, RFC 7915)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated, RFC 4291), :: and ::1 aside
)


@dataclass(frozen=True)
class Rule:
    """One entry of allow_cidrs, deny_cidrs or except_cidrs: a network and, optionally, ports."""

    net: IPNetwork
    ports: tuple[int, int] | None = None  # an inclusive range; None: every port

    def matches(self, forms: tuple[IPAddress, ...], port: int) -> bool:
        if self.ports is not None and not self.ports[0] <= port <= self.ports[1]:
            return False
        return any(a in self.net for a in forms)

    def __str__(self) -> str:
        if self.ports is None:
            return str(self.net)
        low, high = self.ports
        ports = str(low) if low == high else f"{low}-{high}"
        return f"[{self.net}]:{ports}" if self.net.version == 6 else f"{self.net}:{ports}"


class TargetRefused(ProbeAborted):
    """A target the policy refuses: HTTP 403 with ``message``, counted by ``reason``.

    ``message`` is what the requester sees; it never names an address the requester did not
    give (a resolved address would leak internal DNS). ``detail`` adds it, for the log.
    """

    def __init__(self, reason: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.detail = detail or message


class PolicyError(ValueError):
    """A ``target_policy`` block that cannot be used; the message starts with its key path."""


@dataclass(frozen=True)
class TargetPolicy:
    """One ``target_policy`` block as configured."""

    path: str  # "target_policy" or "modules.NAME.target_policy", named in refusals
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    allow_cidrs: tuple[Rule, ...] = ()
    deny_cidrs: tuple[Rule, ...] = ()
    except_cidrs: tuple[Rule, ...] = ()  # lift this block's deny_cidrs for these
    deny_link_local: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The block as configuration, for /config (no secrets in it)."""
        out: dict[str, Any] = {}
        for key in ("allow_hosts", "deny_hosts"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        for key in ("allow_cidrs", "deny_cidrs", "except_cidrs"):
            if getattr(self, key):
                out[key] = [str(n) for n in getattr(self, key)]
        if self.deny_link_local:
            out["deny_link_local"] = True
        return out


@dataclass(frozen=True)
class Policy:
    """The blocks that govern one module (global, then the module's own); each must pass."""

    blocks: tuple[TargetPolicy, ...]

    def check_target(self, target: Target) -> None:
        """Before the probe: name globs, and the address of an IP-address target."""
        if target.ip is not None:
            self._check_ip_target(target)
            return
        name = target.host.lower()
        for block in self.blocks:
            for pattern in block.deny_hosts:
                if fnmatch.fnmatchcase(name, pattern):
                    raise TargetRefused("host_denied", f"target {target.host} matches {block.path}.deny_hosts "
                                                       f"{pattern!r}")
        for block in self.blocks:
            if block.allow_hosts and not any(fnmatch.fnmatchcase(name, p) for p in block.allow_hosts):
                raise TargetRefused("host_not_allowed", f"target {target.host} matches no {block.path}.allow_hosts")

    def check_addresses(self, target: Target, addresses: Iterable[str]) -> None:
        """In the prober: every address it may connect to (``tcp._connect`` tries them in turn)."""
        shown = target.host if target.ip is not None else None  # the requester gave this one
        for text in addresses:
            self._check_address(target, _parse_address(text), shown)

    def _check_ip_target(self, target: Target) -> None:
        assert target.ip is not None
        for block in self.blocks:
            # Names are what allow_hosts lists: with it and no allow_cidrs, addresses are out.
            if block.allow_hosts and not block.allow_cidrs:
                raise TargetRefused("host_not_allowed", f"target {target.host} is an IP address and "
                                                        f"{block.path}.allow_hosts lists names only")
        self._check_address(target, target.ip, target.host)

    def _check_address(self, target: Target, address: IPAddress, shown: str | None) -> None:
        forms = _forms(address)
        port = target.port
        # The requester sees the rule; a resolved address is named in the log line only.
        subject = f"target {target.host}" if shown else f"target {target.host} resolves to an address that"
        detail = f"target {target.host}: address {address}"
        for net in UNSPECIFIED:
            if any(a in net for a in forms):
                raise TargetRefused("unspecified_address", f"{subject} is unspecified (0.0.0.0/8 or ::), which "
                                                           f"connects to the local host",
                                    f"{detail} is in {net}")
        for block in self.blocks:
            if block.deny_link_local:
                for net in LINK_LOCAL_AND_METADATA:
                    if any(a in net for a in forms):
                        raise TargetRefused("link_local", f"{subject} is link-local or a cloud metadata address "
                                                          f"({block.path}.deny_link_local)", f"{detail} is in {net}")
            if any(rule.matches(forms, port) for rule in block.except_cidrs):
                continue  # an exception lifts this block's deny_cidrs, and nothing else
            for rule in block.deny_cidrs:
                if rule.matches(forms, port):
                    where = f"{block.path}.deny_cidrs" + (f" {rule}" if shown else "")
                    raise TargetRefused("address_denied", f"{subject} is in {where}", f"{detail} is in {rule}")
        for block in self.blocks:
            if block.allow_cidrs and not any(rule.matches(forms, port) for rule in block.allow_cidrs):
                where = f"{block.path}.allow_cidrs"
                raise TargetRefused("address_not_allowed", f"{subject} is outside {where}",
                                    f"{detail} is outside {where}")


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo gives "fe80::1%eth0" for scoped addresses; the scope does not change the range.
    return ipaddress.ip_address(text.partition("%")[0])


def _forms(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address, and the IPv4 address an IPv6 form carries (::ffff:a.b.c.d reaches a.b.c.d).

    IPv4-mapped, 6to4, NAT64 (64:ff9b::/96), IPv4-translated and IPv4-compatible forms all
    carry one; a rule on the IPv4 address applies to every way of writing it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped if address.ipv4_mapped is not None else address.sixtofour
        if embedded is None and int(address) > 1 and any(address in net for net in _EMBEDDED_IPV4):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # :: and ::1 are themselves
        if embedded is not None:
            return address, embedded
    return (address,)


def combine(*blocks: TargetPolicy | None) -> Policy | None:
    """The policy of a module from the global block and its own; None when neither is set."""
    present = tuple(b for b in blocks if b is not None)
    return Policy(present) if present else None


def parse_policy(raw: Any, path: str) -> TargetPolicy:
    """Parse one ``target_policy`` block; PolicyError names the key path of a mistake."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{path}: expected a mapping, got {_type_name(raw)}")
    for key in raw:
        if key not in POLICY_KEYS:
            raise PolicyError(f"{path}.{key}: unknown key (expected one of {', '.join(sorted(POLICY_KEYS))})")
    link_local = raw.get("deny_link_local", False)
    if not isinstance(link_local, bool):
        raise PolicyError(f"{path}.deny_link_local: expected bool, got {_type_name(link_local)}")
    return TargetPolicy(
        path=path,
        allow_hosts=_parse_globs(raw.get("allow_hosts"), f"{path}.allow_hosts"),
        deny_hosts=_parse_globs(raw.get("deny_hosts"), f"{path}.deny_hosts"),
        allow_cidrs=_parse_cidrs(raw.get("allow_cidrs"), f"{path}.allow_cidrs"),
        deny_cidrs=_parse_cidrs(raw.get("deny_cidrs"), f"{path}.deny_cidrs"),
        except_cidrs=_parse_cidrs(raw.get("except_cidrs"), f"{path}.except_cidrs"),
        deny_link_local=link_local,
    )


def _parse_globs(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise PolicyError(f"{path}: expected a list of host name patterns")
    out = []
    for pattern in raw:
        # Targets are compared in their ASCII, lower-case form without a trailing dot.
        text = pattern.strip().lower().rstrip(".")
        if not text.isascii():
            raise PolicyError(f"{path}: {pattern!r}: write internationalised names in their ASCII (xn--) form")
        if any(ch.isspace() for ch in text):
            raise PolicyError(f"{path}: {pattern!r} contains whitespace")
        out.append(text)
    return tuple(out)


def _parse_cidrs(raw: Any, path: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise PolicyError(f"{path}: expected a list of CIDRs like 10.0.0.0/8 or fd00::/8")
    return tuple(_parse_rule(text, path) for text in raw)


def _parse_rule(raw: str, path: str) -> Rule:
    """``CIDR`` or ``ADDRESS``, optionally ``:PORT`` or ``:LOW-HIGH`` (IPv6 in brackets to add one)."""
    text = raw.strip()
    port_text: str | None = None
    if text.startswith("["):
        net_text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise PolicyError(f"{path}: {raw!r}: write an IPv6 network with a port as [fd00::/8]:443")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 network without brackets has none
        net_text, _, port_text = text.partition(":")
    else:
        net_text = text
    try:
        net = ipaddress.ip_network(net_text, strict=True)
    except ValueError as exc:
        raise PolicyError(f"{path}: {raw!r} is not a CIDR: {exc}") from None
    if port_text is None:
        return Rule(net)
    low_text, dash, high_text = port_text.partition("-")
    try:
        low = _parse_port(low_text)
        high = _parse_port(high_text) if dash else low
    except ValueError:
        raise PolicyError(f"{path}: {raw!r}: a port is a number from 1 to 65535, or a range like 8000-8999") from None
    if low > high:
        raise PolicyError(f"{path}: {raw!r}: the port range {low}-{high} is empty")
    return Rule(net, (low, high))


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


def _type_name(value: Any) -> str:
    names: dict[type, str] = {dict: "mapping", list: "list", str: "string", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
