"""The library sits below the command line: no module outside onnxlrp/cli imports onnxlrp.cli."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onnxlrp"


def cli_imports(source: str, package: str) -> list[str]:
    """The onnxlrp.cli modules a module of ``package`` imports (absolute or relative, anywhere in it)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if name == "onnxlrp.cli" or name.startswith("onnxlrp.cli.")]
    return found


def test_library_never_imports_cli():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[1] == "cli":
            continue
        found = cli_imports(path.read_text(), ".".join(parts[:-1]))
        if found:
            offenders[str(path)] = found
    assert len(list(PACKAGE.rglob("*.py"))) > 20  # the scan sees the package
    assert offenders == {}


def test_the_check_sees_an_import():
    """The scan finds absolute, from- and relative imports of onnxlrp.cli (so the test above can fail)."""
    assert cli_imports("import onnxlrp.cli.options", "onnxlrp") == ["onnxlrp.cli.options"]
    assert "onnxlrp.cli" in cli_imports("from onnxlrp import cli", "onnxlrp")
    assert "onnxlrp.cli.explain_cmd" in cli_imports("from .cli import explain_cmd", "onnxlrp")
    assert "onnxlrp.cli.options" in cli_imports(
        "def f():\n    from ..cli.options import x", "onnxlrp.evaluation"
    )
    assert cli_imports("from onnxlrp import client, explaining\nimport onnxlrp.clip", "onnxlrp") == []
