"""The package's shape: the layering contract, the type check, imports at the top of modules.

The layers and the mypy settings live in pyproject.toml; docs/architecture.md explains them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = "ssl_exporter"

# `lint-imports`, from the interpreter running the suite (so from the same virtualenv).
LINT_IMPORTS = ("-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
                "--no-cache")

# Imports inside functions, by (file under ssl_exporter/, module or package imported), each
# with the reason it is not at the top of its module.
LAZY_IMPORTS = {
    ("webconfig.py", "bcrypt"): "only needed, and only loaded, when basic auth is configured",
    ("stapling.py", "OpenSSL"): "pyOpenSSL's bindings (0.7 MB) load only for modules that check stapling",
    ("workers.py", "uvloop"): "optional: asyncio's own loop where uvloop is not installed (not Linux)",
    ("resolve.py", "dns"): "dnspython (3.7 MiB PSS, 20-25 ms at start) only for tcp.dns_servers/--dns.server and CAA",
    ("caa.py", "dns"): "dnspython: see resolve.py; only modules with caa: look records up",
}

def _run(args: tuple[str, ...] | list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_imports_keep_the_layers() -> None:
    result = _run(LINT_IMPORTS, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layers_refuse_an_upward_import(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    with open(project / PACKAGE / "result.py", "a") as module:
        module.write("\nfrom ssl_exporter import server  # noqa: E402\n")
    result = _run(LINT_IMPORTS, project)
    assert result.returncode != 0
    assert "ssl_exporter.result is not allowed to import ssl_exporter.server" in result.stdout


def test_a_new_module_needs_a_place_in_the_layers(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / PACKAGE / "newcomer.py").write_text('"""Imports nothing, but has no layer."""\n')
    result = _run(LINT_IMPORTS, project)
    assert result.returncode != 0
    assert "ssl_exporter.newcomer" in result.stdout


def test_types_check(tmp_path: Path) -> None:
    # Settings (strict, overrides) from [tool.mypy] in pyproject.toml.
    result = _run(("-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")), ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _function_level_imports(package: Path = ROOT / PACKAGE) -> set[tuple[str, str, int]]:
    """(file under ``package``, module imported, line) for every import inside a function."""
    found = set()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.update((name, alias.name, node.lineno) for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    # `from ssl_exporter import rdap` imports the module ssl_exporter.rdap.
                    base = "." * node.level + (f"{node.module}." if node.module else "")
                    found.update((name, base + alias.name, node.lineno) for alias in node.names)
    return found


def _allowed_by(entry: tuple[str, str], file: str, module: str) -> bool:
    allowed_file, prefix = entry
    return file == allowed_file and (module == prefix or module.startswith(prefix + "."))


def test_imports_sit_at_the_top_of_modules() -> None:
    allowed = set(LAZY_IMPORTS)
    found = _function_level_imports()
    unexplained = sorted(f"ssl_exporter/{file}:{line}: {module}" for file, module, line in found
                         if not any(_allowed_by(entry, file, module) for entry in allowed))
    assert not unexplained, "import at the top of the module, or add it to LAZY_IMPORTS with the reason"
    stale = sorted(entry for entry in allowed
                   if not any(_allowed_by(entry, file, module) for file, module, _ in found))
    assert not stale, "no such function-level import any more: delete the entry"


def test_the_import_scan_finds_imports_in_functions_and_methods_only(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "top.py").write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg import config\n"
        "def f():\n"
        "    import json\n"
        "    def inner():\n"
        "        from pkg.tls import build, TLSConfig\n"
        "class C:\n"
        "    import re\n"
        "    async def method(self):\n"
        "        from . import sibling\n"
    )
    (tmp_path / "sub" / "deep.py").write_text("def g():\n    import zlib as z\n")
    assert _function_level_imports(tmp_path) == {
        ("top.py", "json", 6), ("top.py", "pkg.tls.build", 8), ("top.py", "pkg.tls.TLSConfig", 8),
        ("top.py", ".sibling", 12), ("sub/deep.py", "zlib", 2),
    }


def test_the_architecture_page_lists_the_layers_of_the_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c.get("containers") == [PACKAGE])
    in_contract = [name.strip(" ()") for layer in layers for name in layer.split("|")]
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("|")][2:]  # after the header
    in_page = [name for row in rows for name in re.findall(r"`([a-z_]+)`", row)]
    assert in_page == in_contract
