"""The package's layout: imports flow one way between modules and between subpackages, no module
outgrows one screenful of ideas, each subpackage is one idea that its `__init__.py` states, and the
tests mirror the modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sngan"
TESTS = ROOT / "tests"
# Dotted names below sngan: "cli", "training.loop", and "__init__", "training.__init__" for the packages.
MODULES = {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path for path in PACKAGE.rglob("*.py")}
SUBPACKAGES = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
# The subpackages and top-level modules from the top down: each imports only those after it
# (docs/code.md draws the same order).
LAYERS = ["__main__", "cli", "__init__", "api", "studies", "training", "metrics", "models", "data", "runs",
          "parallel", "config", "config_files", "errors"]


def _module(dotted: str) -> str | None:
    """The module `sngan.<dotted>` names, or None where it is a package (an `__init__.py`: the
    root's is the public API, re-exported lazily, and a subpackage's holds only its docstring)."""
    return dotted if dotted in MODULES else None


def imported_modules(path: Path) -> set[str]:
    """The sngan modules a module imports anywhere in it, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sngan" and not node.level:
            base = node.module.partition(".")[2]
            for alias in node.names:  # `from sngan.runs import checkpoint` names a module, else a package's names
                found.add(_module(f"{base}.{alias.name}".lstrip(".")) or _module(base))
        elif isinstance(node, ast.Import):
            found |= {_module(a.name.partition(".")[2]) for a in node.names if a.name.startswith("sngan.")}
    this = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return found - {None, this}


def group(module: str) -> str:
    """The subpackage a module belongs to; a top-level module stands for itself."""
    return module.split(".")[0]


def module_graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) for name, path in MODULES.items()}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, deps in module_graph().items():
        graph.setdefault(group(module), set()).update(group(d) for d in deps)
    return {name: deps - {name} for name, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for dep in sorted(graph.get(module, ())):
            if cycle := visit(dep, path + [module]):
                return cycle
        done.add(module)
        return None

    return next((c for m in sorted(graph) if (c := visit(m, []))), None)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_scan_sees_the_imports():
    graph = module_graph()
    assert {"training.state", "models.sample", "runs.run_folder"} <= graph["training.loop"]
    assert {"metrics.evaluate", "studies.report", "config"} <= graph["cli"]  # function-level imports too
    assert graph["studies.report"] >= {"runs.plots", "runs.checkpoint", "runs.run_folder"}


def test_imports_have_no_cycles():
    assert find_cycle(module_graph()) is None


def test_subpackages_import_one_way():
    graph = package_graph()
    assert find_cycle(graph) is None
    assert sorted(graph) == sorted(LAYERS)
    upward = {(a, b) for a, deps in graph.items() for b in deps if LAYERS.index(b) <= LAYERS.index(a)}
    assert upward == set()


def test_modules_fit_one_screenful_of_ideas():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def test_each_subpackage_states_its_idea_and_nothing_else():
    assert SUBPACKAGES == ["data", "metrics", "models", "parallel", "runs", "studies", "training"]
    for name in SUBPACKAGES:
        body = ast.parse((PACKAGE / name / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0].value, ast.Constant), f"sngan/{name}/__init__.py"


def test_the_wheel_holds_every_subpackage():
    listed = re.search(r"^packages = (\[.*?\])", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    assert set(ast.literal_eval(listed)) == {"sngan", "sngan.configs", *(f"sngan.{name}" for name in SUBPACKAGES)}


def test_tests_mirror_the_modules():
    """sngan/x.py is tested in tests/test_x.py and sngan/pkg/x.py in tests/pkg/test_x.py (the
    package's face and its errors are tested through their callers); every test file's name is
    unique, as pytest imports them by name."""
    untested = {"__init__", "__main__", "errors", *(f"{name}.__init__" for name in SUBPACKAGES)}
    missing = [name for name in MODULES if name not in untested
               and not TESTS.joinpath(*name.split(".")[:-1], f"test_{name.split('.')[-1]}.py").is_file()]
    assert missing == []
    names = [path.name for path in TESTS.rglob("*.py")]
    assert len(names) == len(set(names))
