"""The import rules of ``specvlm`` (CONTRIBUTING.md#layout), checked on the source with ``ast``.

* The library (``specvlm/__init__.py``, ``specvlm/*.py``, ``specvlm/families/``, ...) imports
  nothing from the applications (``specvlm/tools/``, ``specvlm/eval/`` and the lmms-eval
  plugin's ``specvlm/models/`` and ``specvlm/tasks/``) or the embedded pair
  (``specvlm/micro/``).
* No import cycle among ``specvlm`` modules.

Every import counts: module level and inside functions (a cycle hidden in a function is still
a cycle), ``import specvlm.x``, ``from specvlm import x``, relative imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "specvlm"
LIBRARY, TOOLS, MICRO = "library", "tools", "micro"
# Which side may not import which: the library stands alone.
FORBIDDEN = {(LIBRARY, TOOLS), (LIBRARY, MICRO)}


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[tuple[str, ...]]:
    """What one module's imports name, as alternatives, most specific first: ``import a.b``
    gives ``(a.b,)``; ``from a import b`` gives ``(a.b, a)`` (the submodule ``a.b`` if there is
    one, else the name ``b`` in ``a``). Relative imports are made absolute."""
    names = []
    for imp in ast.walk(node):
        if isinstance(imp, ast.Import):
            names.extend((alias.name,) for alias in imp.names)
        elif isinstance(imp, ast.ImportFrom):
            base = imp.module or ""
            if imp.level:  # relative: resolved against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (imp.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.extend((f"{base}.{alias.name}", base) for alias in imp.names)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules it imports}``, restricted to ``modules``. A name resolves to the
    longest known module it starts with (``from specvlm.trees import Tree`` -> ``specvlm.trees``,
    ``from specvlm import positions`` -> ``specvlm.positions``); the parent packages Python also
    imports on the way are not edges (every module would depend on ``specvlm/__init__.py``)."""
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for alternatives in _imported_names(tree, module, path.name == "__init__.py"):
            target = next((name for name in alternatives if name in modules), None)
            if target is None:  # a name inside a module: the longest module it starts with
                parts = alternatives[-1].split(".")
                prefixes = (".".join(parts[:cut]) for cut in range(len(parts), 0, -1))
                target = next((name for name in prefixes if name in modules), None)
            if target is not None and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


# the applications built on the library: the CLI's tools, the eval, and the lmms-eval plugin's
# packages (`specvlm.models`, `specvlm.tasks`: the names lmms-eval's plugin mechanism imports)
APPLICATIONS = ("tools", "eval", "models", "tasks")


def side_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in APPLICATIONS:
        return TOOLS
    if len(parts) > 1 and parts[1] == "micro":
        return MICRO
    return LIBRARY


def forbidden_edges(graph: dict[str, set[str]], side=side_of) -> list[tuple[str, str]]:
    """Every import from one side into a side it may not import, sorted."""
    return sorted(
        (a, b) for a, targets in graph.items() for b in targets if (side(a), side(b)) in FORBIDDEN
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[m0, m1, ..., m0]``, or None if the graph is a DAG."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


# --- the rules, on the real package ---------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return import_graph(module_files())


def test_every_module_is_parsed(graph):
    assert {"specvlm", "specvlm.trees", "specvlm.tools.cli", "specvlm.micro.data"} <= set(graph)
    assert {"specvlm.families.base", "specvlm.tools.common"} <= set(graph)
    # function-level and `from specvlm import x` imports are edges too
    assert "specvlm.tools.selfcheck" in graph["specvlm.tools.cli"]
    assert "specvlm.speculative_decoder" in graph["specvlm"]


def test_library_imports_no_tool_and_no_micro_module(graph):
    bad = forbidden_edges(graph)
    assert not bad, "library modules import tools / micro: " + ", ".join(
        f"{a} -> {b}" for a, b in bad
    )


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cli_defines_no_kernels_until_a_command_runs():
    """Building the parser imports no kernel module, so the CLI can still choose the backend;
    and ``specvlm.accelerate`` is the function (no submodule of that name shadows it)."""
    code = (
        "import sys\n"
        "from specvlm.tools import cli\n"
        "cli._parser().parse_args(['demo'])\n"
        "assert 'specvlm_kernels' not in sys.modules, 'kernels imported by the parser'\n"
        "from specvlm.speculative_decoder import SpeculativeDecoder\n"
        "import specvlm\n"
        "assert callable(specvlm.accelerate) and specvlm.SpeculativeDecoder is SpeculativeDecoder\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('specvlm.accelerate') is None\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


# --- the checker itself: it does fail ---------------------------------------------------------


def test_find_cycle_reports_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) is None
    # finished nodes are skipped, cycles that start later are still found
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b", "d"}, "d": {"c"}}) == ["c", "d", "c"]


def test_forbidden_edges_finds_library_to_tools_and_micro():
    graph = {
        "specvlm.speculative_decoder": {"specvlm.tools.timing", "specvlm.trees"},
        "specvlm.families.base": {"specvlm.micro.data"},
        "specvlm.tools.demo": {"specvlm.speculative_decoder", "specvlm.micro.data"},
        "specvlm.trees": set(),
    }
    assert forbidden_edges(graph) == [
        ("specvlm.families.base", "specvlm.micro.data"),
        ("specvlm.speculative_decoder", "specvlm.tools.timing"),
    ]


def test_import_graph_sees_every_form_of_import(tmp_path):
    root = tmp_path / "specvlm"
    (root / "tools").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "tools" / "__init__.py").write_text("")
    (root / "trees.py").write_text("from specvlm import positions\n")
    (root / "positions.py").write_text("def f():\n    import specvlm.tools.demo\n")
    (root / "tools" / "demo.py").write_text("from . import common\nfrom ..trees import x\n")
    (root / "tools" / "common.py").write_text("import os\nfrom specvlm.trees import Tree\n")
    graph = import_graph(module_files(root))
    assert graph == {
        "specvlm": set(),
        "specvlm.positions": {"specvlm.tools.demo"},
        "specvlm.tools": set(),
        "specvlm.tools.common": {"specvlm.trees"},
        "specvlm.tools.demo": {"specvlm.tools.common", "specvlm.trees"},
        "specvlm.trees": {"specvlm.positions"},
    }
    assert forbidden_edges(graph) == [("specvlm.positions", "specvlm.tools.demo")]
    assert find_cycle(graph) == [
        "specvlm.positions",
        "specvlm.tools.demo",
        "specvlm.tools.common",
        "specvlm.trees",
        "specvlm.positions",
    ]
