"""Imports point one way, by a stated rule (issue #30): checked on every module of include/.

The rule, mirrored in ``docs/design.md`` ("Layering"):

- ``runtime`` is the base: every package may import it, and it imports no other package;
- the stage packages come in :data:`PACKAGE_ORDER` (the DAG's stage order, except ``backtest``,
  which replays the labeller's and the economics' logic as of an earlier date and so sits after
  them); a package may import only ``runtime`` and the packages :data:`ALLOWED_IMPORTS` lists for
  it, all of them earlier in the order, so there can be no circle;
- the tools ``erasure``, ``load`` and ``demo`` come last: no stage package imports them;
- ``stages/`` adapters may import any package; no package imports ``stages``;
- nothing in ``include/`` imports Airflow, ``dags`` or ``plugins``.

Every import counts: top-level, function-local, under ``TYPE_CHECKING``, relative, and
``importlib.import_module("include....")`` with a literal name.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tests.report.test_report_imports import cycles

INCLUDE = ROOT / "include"
DESIGN = ROOT / "docs" / "design.md"

#: The packages of include/ in layering order: a package may import only packages before it.
PACKAGE_ORDER = ("runtime", "sql", "extract", "identity", "features", "segmentation", "clv", "labels",
                 "migration", "economics", "backtest", "comparison", "experiment", "report", "crm",
                 "erasure", "load", "demo", "stages")
#: Packages that may import every other package (the DAG tasks' adapters).
IMPORTS_ANY = {"stages"}
#: Package -> the include packages it may import besides itself and ``runtime``. The same table is in
#: docs/design.md ("Allowed imports"); a new cross-package import needs a line in both.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "runtime": set(),
    "sql": set(),
    "extract": set(),
    "identity": set(),
    # run_boundaries: the as-of date and its cutoff, which extract binds first.
    "features": {"extract"},
    "segmentation": {"features"},
    # read_in_chunks / DEFAULT_CHUNK_ROWS of segmentation.scoring: a generic chunked warehouse reader that
    # CLV scoring borrows from a sibling (both run side by side); it belongs in runtime.warehouse.
    "clv": {"segmentation"},
    "labels": {"features", "segmentation", "clv"},
    "migration": set(),
    "economics": {"features"},
    # The backtest runs the run's own logic (features, fit, names, actions) as of an earlier date.
    "backtest": {"features", "segmentation", "labels", "economics"},
    "comparison": set(),
    "experiment": {"features", "economics"},
    # Reads only (writes no table); calls pure helpers of the stages whose tables it shows.
    "report": {"features", "segmentation", "economics", "comparison", "experiment"},
    "crm": set(),
    # TABLE_SPECS (the raw tables) and the CRM's clear marker: an erasure reaches every table and record.
    "erasure": {"extract", "crm"},
    # TABLE_SPECS (the input contract) and the erasure list applied after each load.
    "load": {"extract", "erasure"},
    # The generator plants truth with the pipeline's own key and holdout rules (pure hash functions).
    "demo": {"identity", "experiment"},
}
#: Top-level modules include/ never imports.
FORBIDDEN_ROOTS = ("airflow", "dags", "plugins", "segmentation_providers")


@dataclass(frozen=True)
class Import:
    """One import statement: where it is and the module it names."""

    path: Path
    line: int
    module: str


def _module_name(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every module ``path`` imports anywhere in the file, relative imports resolved against ``root``."""
    found = []
    package = _module_name(path, root)
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append(Import(path, node.lineno, module))
            # `from include import runtime`, `from . import linkage`: the names may be modules.
            found += [Import(path, node.lineno, f"{module}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            found.append(Import(path, node.lineno, node.args[0].value))
    return found


def package_of(module: str) -> str | None:
    """The include package a dotted module name belongs to (``include.clv.models`` -> ``clv``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "include" else None


def package_edges(root: Path = ROOT) -> dict[tuple[str, str], list[Import]]:
    """``(package, imported package) -> the imports making that edge``, over every module under include/."""
    edges = defaultdict(list)
    for path in sorted((root / "include").rglob("*.py")):
        source = package_of(".".join(_module_name(path, root)))
        if source is None:  # include/__init__.py
            continue
        for imp in imports_of(path, root):
            target = package_of(imp.module)
            if target is not None and target != source:
                edges[(source, target)].append(imp)
    return dict(edges)


def package_graph(edges: dict[tuple[str, str], list[Import]]) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    return dict(graph)


def forbidden_edges(edges: dict[tuple[str, str], list[Import]],
                    allowed: dict[str, set[str]]) -> list[str]:
    """Each cross-package import the allowed map does not list, as ``a -> b (file:line)``."""
    bad = []
    for (source, target), where in sorted(edges.items()):
        if source in IMPORTS_ANY or target == "runtime" or target in allowed.get(source, set()):
            continue
        bad.append(f"{source} -> {target} ({_where(where[0])}: {where[0].module})")
    return bad


def _where(imp: Import) -> str:
    path = imp.path.relative_to(ROOT) if imp.path.is_relative_to(ROOT) else imp.path
    return f"{path}:{imp.line}"


def test_every_package_has_a_place_in_the_rule():
    packages = {p.name for p in INCLUDE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(PACKAGE_ORDER), (
        f"packages not in the layering rule: {sorted(packages - set(PACKAGE_ORDER))}; "
        f"listed but gone: {sorted(set(PACKAGE_ORDER) - packages)} (PACKAGE_ORDER here and docs/design.md)")
    assert set(ALLOWED_IMPORTS) | IMPORTS_ANY == set(PACKAGE_ORDER)


def test_the_allowed_map_follows_the_package_order():
    # Every allowed edge points to an earlier package, so the rule itself admits no circle; nothing imports stages.
    rank = {p: i for i, p in enumerate(PACKAGE_ORDER)}
    for source, targets in ALLOWED_IMPORTS.items():
        for target in targets:
            assert rank[target] < rank[source], f"{source} may not import {target}: it comes later in the order"
            assert target not in IMPORTS_ANY


def test_cross_package_imports_are_the_allowed_ones():
    bad = forbidden_edges(package_edges(), ALLOWED_IMPORTS)
    assert not bad, ("imports the layering rule does not allow (docs/design.md, 'Layering'): " + "; ".join(bad)
                     + ". Move the shared code down (runtime, or an earlier package), or, if the rule should "
                       "allow it, add the edge to ALLOWED_IMPORTS and to docs/design.md with the reason.")


def test_no_import_circle_among_packages():
    graph = package_graph(package_edges())
    assert cycles(graph) == []


def test_include_imports_no_airflow_dags_or_plugins():
    bad = [f"{_where(imp)} imports {imp.module}" for path in INCLUDE.rglob("*.py") for imp in imports_of(path)
           if imp.module.split(".")[0] in FORBIDDEN_ROOTS]
    assert not bad, bad


def test_design_doc_mirrors_the_allowed_map():
    # The table under "Allowed imports" in docs/design.md: | `package` | `a`, `b` | why | (— for none).
    text = DESIGN.read_text()
    section = text.split("### Allowed imports", 1)[1].split("\n#", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[a-z_]+`", cells[0]):
            documented[cells[0].strip("`")] = set(re.findall(r"`([a-z_]+)`", cells[1])) & set(PACKAGE_ORDER)
    expected = {**ALLOWED_IMPORTS, **{p: {"*"} for p in IMPORTS_ANY}}
    documented = {p: ({"*"} if p in IMPORTS_ANY else targets) for p, targets in documented.items()}
    assert documented == expected
    assert [p for p in documented] == list(PACKAGE_ORDER), "docs/design.md lists the packages in PACKAGE_ORDER"


def test_the_checks_see_local_relative_and_dynamic_imports(tmp_path):
    # A synthetic include/ whose every kind of import makes an edge the map forbids, and a circle.
    pkg = tmp_path / "include"
    for name in ("a", "b", "c", "d"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from include.b import y\n    return y\n")
    (pkg / "b" / "y.py").write_text("from ..c import z\n")
    (pkg / "c" / "z.py").write_text("import importlib\nM = importlib.import_module('include.a.x')\n")
    (pkg / "d" / "w.py").write_text("from include import a\nimport airflow.sdk\n")
    edges = package_edges(tmp_path)
    assert set(edges) == {("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")}
    assert edges[("a", "b")][0].line == 2
    assert len(forbidden_edges(edges, {"a": set(), "b": {"c"}, "c": set(), "d": {"a"}})) == 2
    assert cycles(package_graph(edges)) == [["a", "b", "c", "a"]]
    assert "airflow.sdk" in {i.module for i in imports_of(pkg / "d" / "w.py", tmp_path)}


# -- The first checks of the rule, kept: runtime imports no package, no package imports stages. ----------------

def _imports(path) -> set[str]:
    return {imp.module for imp in imports_of(path)}


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
