"""CAA: would the CA that issued the served certificate be allowed to issue the next one?

A CAA record set that no longer names the CA, or a CAA lookup that fails, makes the next
renewal fail weeks after the change that caused it. A module with ``caa:`` looks up CAA for
the verified name as a CA does (RFC 8659) and decides for the leaf's issuer:

- The relevant record set is the CAA RRset of the name (its CNAME chain followed by the
  resolver, RFC 8659 section 3) or, when that is empty, of the closest parent domain that
  has one, up to the top-level domain. For a wildcard name the search starts at the name
  without its ``*.``. No set at all: any CA may issue.
- A record with the critical flag (128) and a tag this code does not implement forbids all
  issuance, as RFC 8659 section 4.1 requires of a CA that does not understand it.
- For a wildcard name ``issuewild`` records count when there are any, else ``issue``; for
  other names ``issue``. No such record: any CA may issue.
- A record allows the CA when its issuer domain is one of the CA's CAA identities and its
  RFC 8657 parameters fit: ``accounturi`` must equal the module's ``caa.account_uri``,
  ``validationmethods`` must list one of ``caa.validation_methods``. When the module does
  not say which account or method its renewals use, such a record is undecided: the verdict
  is unknown (absent) unless another record allows the CA outright.

The CA's identities come from :data:`KNOWN_CAS`, keyed by the issuer's organization name,
which stays the same across a CA's intermediates (Let's Encrypt's R10, R11, E5, ...), or
from the module's ``caa.identities``, keyed by the issuer's organization or common name.
An issuer in neither is unknown, and so is the verdict, unless the record set decides
without naming a CA (no set, a critical unknown tag, only ``issue ";"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from ssl_exporter import resolve
from ssl_exporter.certs import matches_hostname
from ssl_exporter.printable import printable
from ssl_exporter.result import CAARecord as Record
from ssl_exporter.result import CAAResult, CertInfo

if TYPE_CHECKING:  # dnspython is imported at the first lookup: only modules with caa: make one
    import dns.asyncresolver

# CAA identities of public CAs, by the organization (O) of the certificates they issue.
# Only identities the CAs document themselves; add others with caa.identities.
KNOWN_CAS: Mapping[str, tuple[str, ...]] = {
    "Let's Encrypt": ("letsencrypt.org",),
    "Google Trust Services": ("pki.goog",),
    "Google Trust Services LLC": ("pki.goog",),
    "DigiCert Inc": ("digicert.com",),
    "Sectigo Limited": ("sectigo.com", "comodoca.com"),
    "Amazon": ("amazon.com", "amazontrust.com", "awstrust.com", "amazonaws.com"),
    "GlobalSign nv-sa": ("globalsign.com",),
}
# Property tags this module implements (RFC 8659); a critical record with any other forbids.
KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef"})
CRITICAL = 128
# Bounds on what a record set may put in the answer: records exported, characters a value keeps.
MAX_RECORDS = 32
MAX_VALUE_CHARS = 256


@dataclass(frozen=True)
class CAAConfig:
    """``caa:`` of a tcp module (docs/configuration.md)."""

    identities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # issuer O or CN -> CAA domains
    account_uri: str | None = None  # RFC 8657 accounturi the renewals use
    validation_methods: tuple[str, ...] = ()  # RFC 8657 methods the renewals use (http-01, dns-01, ...)
    # The system resolver's servers, read once per load (used without dns_servers).
    system: resolve.SystemServers | None = field(default=None, compare=False, repr=False)


class LookupFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def candidates(name: str) -> list[str]:
    """The names a CA searches, closest first: the name (without ``*.``) and its parents,
    the top-level domain included, the root not."""
    labels = name.rstrip(".").lower().split(".")
    if labels[0] == "*":
        labels = labels[1:]
    return [".".join(labels[i:]) for i in range(len(labels))]


async def relevant_set(name: str, resolver: dns.asyncresolver.Resolver) -> tuple[str, list[Record]]:
    """The relevant CAA record set of ``name`` and the domain it was found at ("" when none)."""
    import dns.exception
    import dns.name
    import dns.resolver
    for candidate in candidates(name):
        try:
            answer = await resolver.resolve(dns.name.from_text(candidate), "CAA", search=False,
                                            raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            continue
        except dns.exception.DNSException as exc:
            raise LookupFailed(resolve.failure_reason(exc), f"CAA {candidate}: {exc}") from None
        if answer.rrset:
            return candidate, [Record(r.flags, r.tag.decode("ascii", "replace").lower(),
                                      r.value.decode("utf-8", "replace")) for r in answer.rrset]
    return "", []


def issuer_identities(leaf: CertInfo, configured: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The CAA domains of the CA that issued ``leaf``: configured (by issuer O or CN) first,
    else the built-in map (by issuer O); () when unknown."""
    issuer = x509.load_der_x509_certificate(leaf.der).issuer
    organizations = [str(a.value) for a in issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    for key in (*organizations, leaf.issuer_cn):
        if key and key in configured:
            return tuple(d.lower() for d in configured[key])
    for organization in organizations:
        if organization in KNOWN_CAS:
            return KNOWN_CAS[organization]
    return ()


def decide(records: Sequence[Record], wildcard: bool, identities: Iterable[str], config: CAAConfig) -> bool | None:
    """Whether the CA with ``identities`` may issue for the name; None when it cannot be told."""
    if not records:
        return True
    if any(r.flags & CRITICAL and r.tag not in KNOWN_TAGS for r in records):
        return False
    wild = [r for r in records if r.tag == "issuewild"]
    relevant = wild if wildcard and wild else [r for r in records if r.tag == "issue"]
    if not relevant:
        return True
    known = {i.lower() for i in identities}
    verdicts = [_allows(r.value, known, config) for r in relevant]
    if True in verdicts:
        return True
    return None if None in verdicts else False


def _allows(value: str, identities: set[str], config: CAAConfig) -> bool | None:
    """One issue/issuewild value (RFC 8659 section 4.2, RFC 8657 parameters)."""
    domain, _, rest = value.partition(";")
    domain = domain.strip().lower()
    if not domain:
        return False  # issue ";": no CA at all
    if not identities:
        return None  # a CA is named, and we do not know whether it is this one
    if domain not in identities:
        return False
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(";"))):
        key, sep, val = part.partition("=")
        if not sep:
            return False  # malformed: a CA treats the record as naming no CA
        params[key.strip().lower()] = val.strip()
    verdict: bool | None = True
    if "accounturi" in params:
        verdict = None if config.account_uri is None else params["accounturi"] == config.account_uri
    if verdict is not False and "validationmethods" in params:
        methods = {m.strip() for m in params["validationmethods"].split(",")}
        fits = None if not config.validation_methods else bool(methods & set(config.validation_methods))
        verdict = fits if verdict is True else (False if fits is False else None)
    return verdict


def issued_name(leaf: CertInfo | None, name: str) -> str:
    """The name a renewal of ``leaf`` asks for on behalf of ``name``: ``name`` itself, or
    ``*.parent`` when only a wildcard SAN of the leaf covers it."""
    if leaf is None or name.lower() in (n.lower() for n in leaf.dns_names):
        return name
    parent = name.partition(".")[2]
    if parent and f"*.{parent}".lower() in (n.lower() for n in leaf.dns_names) and matches_hostname(leaf, name):
        return f"*.{parent}"
    return name


async def check(name: str, leaves: Sequence[CertInfo], config: CAAConfig, servers: Sequence[resolve.Server],
                timeout: float) -> CAAResult:
    """Look up the relevant CAA set for ``name`` as the served leaf covers it and decide for
    the issuers of ``leaves`` (one per address probed; all must be allowed). Never raises
    for DNS failures."""
    import dns.exception
    name = issued_name(leaves[0] if leaves else None, name)
    try:
        resolver = resolve.make_resolver(servers, timeout, config.system)
        async with asyncio.timeout(timeout):
            domain, records = await relevant_set(name, resolver)
    except dns.exception.DNSException as exc:  # no_resolver: the system's configuration names no server
        return CAAResult(lookup_success=False, name=name, reason=resolve.failure_reason(exc))
    except LookupFailed as exc:
        return CAAResult(lookup_success=False, name=name, reason=exc.reason)
    except TimeoutError:
        return CAAResult(lookup_success=False, name=name, reason="timeout")
    wildcard = name.startswith("*.")
    verdicts = [decide(records, wildcard, issuer_identities(leaf, config.identities), config) for leaf in leaves]
    allowed: bool | None
    if not verdicts:
        allowed = None  # no leaf: no issuer to judge
    elif False in verdicts:
        allowed = False
    elif None in verdicts:
        allowed = None
    else:
        allowed = True
    return CAAResult(lookup_success=True, name=name, domain=domain, records=tuple(records), issuer_allowed=allowed)


def exported_value(value: str) -> str:
    """A record's value as a label: printable, at most MAX_VALUE_CHARS characters."""
    text = printable(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
