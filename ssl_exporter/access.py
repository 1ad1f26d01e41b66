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
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
REASONS = {
    "host_denied": "the target's name matches deny_hosts",
    "host_not_allowed": "allow_hosts is set and the target's name (or IP-address target) matches none of it",
    "address_denied": "an address of the target is in deny_cidrs",
    "address_not_allowed": "allow_cidrs is set and an address of the target is outside it",
    "link_local": "an address of the target is link-local or a cloud metadata address (deny_link_local)",
}

POLICY_KEYS = ("allow_hosts", "deny_hosts", "allow_cidrs", "deny_cidrs", "deny_link_local")


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
    allow_cidrs: tuple[IPNetwork, ...] = ()
    deny_cidrs: tuple[IPNetwork, ...] = ()
    deny_link_local: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The block as configuration, for /config (no secrets in it)."""
        out: dict[str, Any] = {}
        for key in ("allow_hosts", "deny_hosts"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        for key in ("allow_cidrs", "deny_cidrs"):
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
        # The requester sees the rule; a resolved address is named in the log line only.
        subject = f"target {target.host}" if shown else f"target {target.host} resolves to an address that"
        detail = f"target {target.host}: address {address}"
        for block in self.blocks:
            if block.deny_link_local:
                for net in LINK_LOCAL_AND_METADATA:
                    if any(a in net for a in forms):
                        raise TargetRefused("link_local", f"{subject} is link-local or a cloud metadata address "
                                                          f"({block.path}.deny_link_local)", f"{detail} is in {net}")
            for net in block.deny_cidrs:
                if any(a in net for a in forms):
                    rule = f"{block.path}.deny_cidrs" + (f" {net}" if shown else "")
                    raise TargetRefused("address_denied", f"{subject} is in {rule}", f"{detail} is in {net}")
        for block in self.blocks:
            if block.allow_cidrs and not any(a in net for net in block.allow_cidrs for a in forms):
                rule = f"{block.path}.allow_cidrs"
                raise TargetRefused("address_not_allowed", f"{subject} is outside {rule}",
                                    f"{detail} is outside {rule}")


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo gives "fe80::1%eth0" for scoped addresses; the scope does not change the range.
    return ipaddress.ip_address(text.partition("%")[0])


def _forms(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address, and the IPv4 address an IPv6 form carries (::ffff:a.b.c.d reaches a.b.c.d)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address, address.ipv4_mapped
        if address.sixtofour is not None:
            return address, address.sixtofour
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


def _parse_cidrs(raw: Any, path: str) -> tuple[IPNetwork, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise PolicyError(f"{path}: expected a list of CIDRs like 10.0.0.0/8 or fd00::/8")
    out = []
    for text in raw:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError as exc:
            raise PolicyError(f"{path}: {text!r} is not a CIDR: {exc}") from None
    return tuple(out)


def _type_name(value: Any) -> str:
    names: dict[type, str] = {dict: "mapping", list: "list", str: "string", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
