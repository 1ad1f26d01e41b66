"""ssl_probe_success is decided in one function (ssl_exporter.success) from a probe's facts."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from ssl_exporter import success
from ssl_exporter.certs import parse_der
from ssl_exporter.result import AddressResult, CertInfo, ProbeError, ProbeResult, RevocationCheck
from ssl_exporter.success import Enforcement, decide, decided
from tests.conftest import PKI

PACKAGE = Path(success.__file__).parent
STRICT = Enforcement("handshake")
INSECURE = Enforcement("handshake", insecure_skip_verify=True)
ENFORCED = Enforcement("handshake", revocation=True)


@pytest.fixture(scope="module")
def leaf(pki: PKI) -> CertInfo:
    return parse_der(pki.inter.issue("decide.example.test", dns=("decide.example.test",)).der)


def handshake_facts(leaf: CertInfo, **changes: object) -> ProbeResult:
    """A completed handshake whose chain and name verified: the facts of a good probe."""
    good = ProbeResult(success=False, duration=0.1, certs=(leaf,), positions=("0",), handshake_success=True,
                       fallback_handshake=False, chain_valid=True, hostname_valid=True)
    return dataclasses.replace(good, **changes)  # type: ignore[arg-type]


def verify_error(reason: str) -> ProbeError:
    return ProbeError("verify", reason)


REVOKED = (RevocationCheck("0", "ocsp", "revoked"),)


@pytest.mark.parametrize(("changes", "strict", "insecure"), [
    ({}, True, True),
    ({"chain_valid": False, "errors": (verify_error("unknown_ca"),)}, False, True),
    ({"hostname_valid": False, "errors": (verify_error("hostname_mismatch"),)}, False, True),
    ({"chain_valid": None}, False, True),  # the verdict is unknown: not a success unless insecure
    # A verification error elsewhere than the verdicts (a non-leaf that does not parse) is reported only.
    ({"errors": (verify_error("bad_certificate"),)}, True, True),
    # Any error outside the verify stage fails the probe, insecure or not.
    ({"errors": (ProbeError("handshake", "timeout"),)}, False, False),
    ({"errors": (ProbeError("resolve", "refused_by_policy"),)}, False, False),
    # The probe's own handshake failed: certificates of the fallback handshake never succeed.
    ({"handshake_success": False, "fallback_handshake": True}, False, False),
    ({"handshake_success": False}, False, False),
    # The leaf (position 0) could not be read.
    ({"positions": ("1",)}, False, False),
    ({"positions": (), "certs": ()}, False, False),
    # Revoked, checked by a module that does not enforce revocation: reported only.
    ({"revocation": REVOKED, "errors": (verify_error("revoked"),)}, True, True),
])
def test_handshake_decision_table(leaf: CertInfo, changes: dict[str, object], strict: bool, insecure: bool) -> None:
    facts = handshake_facts(leaf, **changes)
    assert decide(facts, STRICT).success is strict
    assert decide(facts, INSECURE).success is insecure


def test_enforced_revocation_fails_even_an_insecure_probe(leaf: CertInfo) -> None:
    facts = handshake_facts(leaf, revocation=REVOKED, errors=(verify_error("revoked"),))
    assert decide(facts, ENFORCED).success is False
    assert decide(facts, dataclasses.replace(ENFORCED, insecure_skip_verify=True)).success is False
    good = handshake_facts(leaf, revocation=(RevocationCheck("0", "ocsp", "good"),))
    assert decide(good, ENFORCED).success is True
    unknown = handshake_facts(leaf, revocation=(RevocationCheck("0", "crl", "unknown", reason="timeout"),))
    assert decide(unknown, ENFORCED).success is True  # unknown is not revoked


def test_notes_say_what_was_reported_but_not_enforced(leaf: CertInfo) -> None:
    facts = handshake_facts(leaf, hostname_valid=False, revocation=REVOKED)
    notes = decide(facts, INSECURE).notes
    assert notes == ("insecure_skip_verify: verification failures reported but not enforced",
                     "revocation.enforce is false: revoked certificates reported but not enforced")
    assert decide(handshake_facts(leaf), INSECURE).notes == ()


def test_a_revocation_not_enforced_is_noted_when_verification_failed_too(leaf: CertInfo) -> None:
    # The probe fails on its chain; that the revoked leaf was not enforced is still worth a note.
    facts = handshake_facts(leaf, chain_valid=False, revocation=REVOKED,
                            errors=(verify_error("unknown_ca"), verify_error("revoked")))
    decision = decide(facts, STRICT)
    assert decision.success is False
    assert decision.notes == ("revocation.enforce is false: revoked certificates reported but not enforced",)


def test_every_address_must_succeed(leaf: CertInfo) -> None:
    good, bad = handshake_facts(leaf), handshake_facts(leaf, chain_valid=False)
    whole = ProbeResult(success=False, duration=0.1,
                        addresses=(AddressResult("127.0.0.1", good), AddressResult("::1", good)))
    logged: list[str] = []
    result = decided(whole, STRICT, logged.append)
    assert result.success is True
    assert [a.result.success for a in result.addresses or ()] == [True, True]

    mixed = dataclasses.replace(whole, addresses=(AddressResult("127.0.0.1", good), AddressResult("::1", bad)))
    result = decided(mixed, STRICT, logged.append)
    assert result.success is False
    assert [a.result.success for a in result.addresses or ()] == [True, False]
    # insecure: each address succeeds, and its note names it
    result = decided(mixed, INSECURE, logged.append)
    assert result.success is True
    assert logged == ["[[::1]] insecure_skip_verify: verification failures reported but not enforced"]

    assert decided(dataclasses.replace(whole, addresses=()), STRICT, logged.append).success is False
    refused = dataclasses.replace(whole, errors=(ProbeError("resolve", "timeout"),))
    assert decided(refused, STRICT, logged.append).success is False


def test_certificate_and_lookup_rules(leaf: CertInfo) -> None:
    files = Enforcement("certificates")
    read = ProbeResult(success=False, duration=0.1, certs=(leaf,))
    assert decide(read, files).success is True
    assert decide(dataclasses.replace(read, certs=()), files).success is False
    unreadable = dataclasses.replace(read, errors=(ProbeError("read", "parse_error"),))
    assert decide(unreadable, files).success is False
    lookup = Enforcement("lookup")
    assert decide(ProbeResult(success=False, duration=0.1), lookup).success is True
    assert decide(ProbeResult(success=False, duration=0.1, errors=(ProbeError("rdap", "timeout"),)),
                  lookup).success is False


# --- exactly one place decides ---------------------------------------------------------------


def _success_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """Every ``x.success = ...`` and every ``success=...`` keyword in a call."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "success":
                found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "success":
                    found.append((keyword.value.lineno, f"success={ast.unparse(keyword.value)}"))
    return found


def test_success_is_written_only_by_the_decision() -> None:
    writes = {str(path.relative_to(PACKAGE)): _success_writes(ast.parse(path.read_text(), str(path)))
              for path in sorted(PACKAGE.rglob("*.py"))}
    elsewhere = {path: found for path, found in writes.items()
                 if found and path not in ("success.py", "probers/base.py")}
    assert elsewhere == {}
    # The recorder freezes its facts with success undecided; only success.py sets it.
    assert [text for _line, text in writes["probers/base.py"]] == ["success=False"]
    assert [text for _line, text in writes["success.py"]] == ["success=decision.success"]


def test_the_scan_sees_a_second_place() -> None:
    tree = ast.parse("rec.success = True\nProbeResult(success=ok, duration=1.0)\n")
    assert [text for _line, text in _success_writes(tree)] == ["rec.success = True", "success=ok"]
