"""The installed package: every subpackage is listed in pyproject.toml and converters/ installs as
onnxlrp.converters (a subpackage missing from the list works in an editable install and is absent
from the wheel)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_installed():
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "onnxlrp").rglob("__init__.py")}
    on_disk.add("onnxlrp.converters")
    assert set(_setuptools()["packages"]) == on_disk


def test_converters_install_under_onnxlrp():
    assert _setuptools()["package-dir"] == {"onnxlrp.converters": "converters"}
    assert (ROOT / "onnxlrp" / "py.typed").is_file()
    spec = importlib.util.find_spec("onnxlrp.converters.lrp_toolbox")
    assert spec is not None and Path(spec.origin).parent == ROOT / "converters"
