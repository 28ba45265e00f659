"""The layering of docs/architecture.md, read from the source: imports run one way only.

Every module of ``tcpmgm`` is read as text, never imported: ``.py`` and
``.pyi`` files with :mod:`ast`, Cython's ``.pyx``/``.pxd`` (and the ``.pxi``
files they ``include``) with a regular expression for ``import`` and
``cimport``.  Every import counts, also one inside a function or under
``TYPE_CHECKING``: a lazy import hides a dependency from the reader, it does
not remove it.  ``importlib.import_module("...")`` and ``__import__("...")``
with a literal name count as imports too.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkout import CHECKOUT, COMPILED_MODULES

PACKAGE = CHECKOUT / "tcpmgm"

# Lowest first: a module may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_extensions", ("tcpmgm._extensions",)),
    ("model", ("tcpmgm.model",)),
    ("matching", ("tcpmgm.matching",)),
    ("sql", ("tcpmgm.sql",)),
    ("opensips", ("tcpmgm.opensips",)),
    ("service", ("tcpmgm.service",)),
    ("tools", ("tcpmgm.tools",)),
)
# The names the README documents, above everything they re-export.
FACADES = frozenset(
    {"tcpmgm", "tcpmgm.__main__", "tcpmgm.aio", "tcpmgm.metrics", "tcpmgm.mi", "tcpmgm.sockets", "tcpmgm.limits"}
)

# Each compiled module and the pure twins that stand in for it (the matcher's records have their own).
TWINS = {
    "tcpmgm.matching._matcher": ("tcpmgm.matching.reference", "tcpmgm.matching._records_py"),
    "tcpmgm.matching._addr": ("tcpmgm.matching._addr_py",),
    "tcpmgm.sql._rows": ("tcpmgm.sql._rows_py",),
}

BENCH = "tcpmgm_bench"
# The one place the runtime package names the harness: the CLI's lazy `bench` command.
BENCH_NAMED_BY = {("tcpmgm.tools.cli", "tcpmgm_bench.harness")}

_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd")
_CYTHON_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<base>[\w.]+)[ \t]+c?import[ \t]+(?P<names>\([^)]*\)|[^\n#]+)"
    r"|c?import[ \t]+(?P<modules>[^\n#]+))",
    re.MULTILINE,
)
_CYTHON_INCLUDE = re.compile(r"^[ \t]*include[ \t]+[\"']([^\"']+)[\"']", re.MULTILINE)
_LITERAL_IMPORT = re.compile(r"(?:import_module|__import__)\(\s*[\"']([\w.]+)[\"']")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CHECKOUT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def sources() -> dict[str, tuple[Path, ...]]:
    """Each module of the package and the files that declare it (``x.pyx`` with ``x.pxd`` and ``x.pyi``)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in _SUFFIXES and "__pycache__" not in path.parts:
            found.setdefault(module_name(path), []).append(path)
    return {name: tuple(paths) for name, paths in found.items()}


def package_of(module: str, path: Path) -> str:
    return module if path.stem == "__init__" else module.rpartition(".")[0]


def absolute(base: str, level: int, package: str) -> str:
    """The module a ``from`` import names: ``base`` after ``level`` dots, seen from ``package``."""
    if level == 0:
        return base
    anchor = package.split(".")
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, base] if base else anchor)


def targets(base: str, names: list[str]) -> Iterator[str]:
    """``from base import names``: a name that is a module is imported itself, the rest come from ``base``."""
    modules = sources()
    rest = False
    for name in names:
        if f"{base}.{name}" in modules:
            yield f"{base}.{name}"
        else:
            rest = True
    if rest or not names:
        yield base


def python_imports(module: str, path: Path) -> Iterator[str]:
    package = package_of(module, path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from targets(absolute(node.module or "", node.level, package), [a.name for a in node.names])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def cython_text(path: Path) -> str:
    """``path`` with the ``.pxi`` files it includes, recursively (they are part of its module)."""
    text = path.read_text(encoding="utf-8")
    included = [cython_text(path.parent / name) for name in _CYTHON_INCLUDE.findall(text)]
    return "\n".join([text, *included])


def cython_imports(module: str, path: Path) -> Iterator[str]:
    package = package_of(module, path)
    text = cython_text(path)
    for match in _CYTHON_IMPORT.finditer(text):
        if match["modules"] is not None:
            yield from (item.split()[0] for item in match["modules"].split(",") if item.strip())
            continue
        dotted = match["base"]
        level = len(dotted) - len(dotted.lstrip("."))
        names = [item.split()[0] for item in match["names"].strip("()").replace("\n", " ").split(",") if item.strip()]
        yield from targets(absolute(dotted[level:], level, package), names)
    yield from _LITERAL_IMPORT.findall(text)


def owner(name: str) -> str:
    """The module of ours that ``import name`` loads: its longest prefix that is one of ours."""
    modules = sources()
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


@functools.cache
def imports() -> dict[str, frozenset[str]]:
    """For each module, every module (ours or not) it imports; ours by their module name."""
    graph: dict[str, frozenset[str]] = {}
    for module, paths in sources().items():
        found: set[str] = set()
        for path in paths:
            read = python_imports if path.suffix in (".py", ".pyi") else cython_imports
            found.update(owner(name) for name in read(module, path))
        found.discard(module)
        graph[module] = frozenset(found)
    return graph


def ours(name: str) -> bool:
    return name == "tcpmgm" or name.startswith("tcpmgm.")


def layer(module: str) -> int | None:
    if module in FACADES:
        return len(LAYERS)
    for rank, (_, packages) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return rank
    return None


def layer_name(rank: int) -> str:
    return LAYERS[rank][0] if rank < len(LAYERS) else "facades"


def closure(module: str) -> set[str]:
    """Every module of ours that importing ``module`` can reach."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in imports()[todo.pop()]:
            if ours(name) and name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = {m: sorted(n for n in targets_ if n in imports()) for m, targets_ in imports().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_the_imports():
    """The checks below are only as good as the reader: it must find each kind of import."""
    graph = imports()
    assert "tcpmgm.sql.rows" in graph["tcpmgm.sql.loader"]  # from .rows import RowReader
    assert "tcpmgm.model.limits" in graph["tcpmgm.sql._rows"]  # from ..model import limits (.pyx)
    assert "tcpmgm.matching._addr" in graph["tcpmgm.matching._matcher"]  # an absolute cimport
    assert "tcpmgm.sql.watch" in graph["tcpmgm.service.manager"]
    assert "tcpmgm.service.manager" in graph["tcpmgm"]  # the facade
    assert "tcpmgm.tools.cli" in graph["tcpmgm.__main__"]


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in sources() if layer(m) is None)
    assert not unplaced, f"modules in no layer (place them in a sub-package, see docs/architecture.md): {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, names in sorted(imports().items()):
        own = layer(module)
        for name in sorted(names):
            theirs = layer(name) if ours(name) else None
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} ({layer_name(own)}) imports {name} ({layer_name(theirs)})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycles():
    assert not cycles(), f"modules that import each other, directly or through others: {cycles()}"


def test_compiled_modules_never_import_their_pure_twins():
    assert sorted(TWINS) == sorted(COMPILED_MODULES)
    reached = {compiled: twin for compiled, twins in TWINS.items() for twin in twins if twin in closure(compiled)}
    assert not reached, f"compiled modules that import their pure twin (directly or not): {reached}"


def test_only_the_cli_names_the_benchmark_harness():
    importers = sorted(m for m, names in imports().items() if any(n.split(".")[0] == BENCH for n in names))
    assert not importers, f"modules that import {BENCH}: {importers}"
    named = {
        (module, node.value)
        for module, paths in sources().items()
        for path in paths
        if path.suffix == ".py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(rf"{BENCH}(\.\w+)*", node.value)
    }
    assert named == BENCH_NAMED_BY


def test_the_harness_is_loaded_only_for_bench():
    """Importing every facade, listing the commands and running one other than ``bench`` leave the
    harness unloaded; ``bench --help`` loads it."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import tcpmgm, tcpmgm.aio, tcpmgm.mi, tcpmgm.sockets, tcpmgm.limits\n"
        "from tcpmgm.tools.cli import cli\n"
        "assert 'Usage:' in CliRunner().invoke(cli, ['check', '--help']).output\n"
        "assert 'bench' in CliRunner().invoke(cli, ['--help']).output\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] == {BENCH!r}))\n"
        "assert 'Usage:' in CliRunner().invoke(cli, ['bench', '--help']).output\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] == {BENCH!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    unloaded, loaded = result.stdout.splitlines()
    assert unloaded == "[]"
    assert f"{BENCH}.harness" in loaded


def test_every_package_of_the_tree_is_in_the_distribution():
    # setuptools takes the packages pyproject.toml lists, nothing else: a sub-package
    # missing there works in an editable install and is absent from the wheel.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    listed = set(tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert in_tree | {BENCH} == listed
