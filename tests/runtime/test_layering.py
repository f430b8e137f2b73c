"""Imports point one way: stages -> domain packages -> runtime; include/ never imports Airflow."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

INCLUDE = ROOT / "include"


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(package: str):
    return sorted((INCLUDE / package).rglob("*.py"))


def test_runtime_imports_no_domain_package_or_stage():
    for path in _modules("runtime"):
        bad = {m for m in _imports(path) if m.startswith("include.") and not m.startswith("include.runtime")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_domain_packages_import_no_stage_and_include_imports_no_airflow():
    for path in INCLUDE.rglob("*.py"):
        imports = _imports(path)
        assert not {m for m in imports if m == "airflow" or m.startswith("airflow.")}, path
        if "stages" not in path.parts:
            assert not {m for m in imports if m.startswith("include.stages")}, path


def test_the_crm_plugin_imports_runtime_not_stages():
    for path in (ROOT / "plugins").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("include.stages")}, path
