"""Every reason the code can raise or record is in the one registry (ssl_exporter.reasons)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from ssl_exporter import access, ari, errors, reasons, revocation

PACKAGE = Path(reasons.__file__).parent

# Who takes a reason, at which positional index (or as ``reason=``), from which set.
TAKERS: dict[str, tuple[int, Mapping[str, str]]] = {
    "ProbeFailure": (0, reasons.PROBE),
    "ProbeError": (1, reasons.PROBE),
    "fail": (1, reasons.PROBE),  # ProbeRecorder.fail(stage, reason, detail)
    "ReadError": (1, reasons.PROBE),
    "SourceError": (0, reasons.PROBE),
    "_raise": (0, reasons.PROBE),  # sources: raise SourceError
    "LookupFailed": (0, reasons.PROBE),  # rdap
    "TargetRefused": (0, reasons.REFUSED),
    "_unknown": (0, reasons.REVOCATION),
    "_Failed": (0, reasons.ARI),
    "Answer": (0, reasons.ARI),
}


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def reason_literals(tree: ast.Module) -> Iterator[tuple[str, int, str]]:
    """(taker, line, reason) for each call in ``tree`` that passes a reason the scan can read:
    a string literal, or a module-level name bound to one (starttls.PROTOCOL, ...)."""
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _name(node.func) not in TAKERS:
            continue
        taker = _name(node.func)
        index, _known = TAKERS[taker]
        args = [k.value for k in node.keywords if k.arg == "reason"] or node.args[index:index + 1]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield taker, node.lineno, arg.value
            elif isinstance(arg, ast.Name) and arg.id in constants:
                yield taker, node.lineno, constants[arg.id]


def test_every_reason_literal_is_registered() -> None:
    unknown = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for taker, line, reason in reason_literals(ast.parse(path.read_text(), str(path))):
            checked += 1
            if reason not in TAKERS[taker][1]:
                unknown.append(f"{path.relative_to(PACKAGE)}:{line}: {taker}({reason!r})")
    assert unknown == []
    assert checked > 120  # the scan reads what it should: 157 calls when it was written


def test_the_scan_catches_an_unregistered_reason() -> None:
    tree = ast.parse('X = "made_up"\nrec.fail("verify", "invented", "")\nraise ProbeFailure(X, "x")\n'
                     'ProbeError(stage="read", reason="expired")\n')
    assert [(taker, reason) for taker, _line, reason in reason_literals(tree)] == [
        ("fail", "invented"), ("ProbeFailure", "made_up"), ("ProbeError", "expired")]


def test_the_views_are_the_registry() -> None:
    assert errors.REASONS is reasons.PROBE
    assert access.REASONS is reasons.REFUSED
    assert revocation.UNKNOWN_REASONS is reasons.REVOCATION
    assert ari.REASONS is reasons.ARI
    assert reasons.ALL == set(reasons.PROBE) | set(reasons.REFUSED) | set(reasons.REVOCATION) | set(reasons.ARI)
    for table in reasons.REGISTRY.values():
        assert all(meaning and meaning == meaning.strip() for meaning in table.values())
