"""The packages' import graph is a DAG: gancore <- ganeval <- {celebahq, progan}.

Every module of the four packages is parsed (ast), and every import is collected: module-level, inside
functions (lazy), relative ones resolved, and by-name strings handed to importlib.import_module / __import__.
An edge gancore -> {ganeval, celebahq, progan}, ganeval -> {celebahq, progan} or celebahq <-> progan fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gancore", "ganeval", "celebahq", "progan")
FORBIDDEN = {  # toolkit_testing: the tests' and benchmarks' helpers, which no package may use
    "gancore": {"ganeval", "celebahq", "progan", "toolkit_testing"},
    "ganeval": {"celebahq", "progan", "toolkit_testing"},
    "celebahq": {"progan", "toolkit_testing"},
    "progan": {"celebahq", "toolkit_testing"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _dynamic_target(call: ast.Call) -> str | None:
    """The module named by importlib.import_module("x") / __import__("x") / import_module("x"), if literal."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (absolute names)."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(_resolve_relative(module, is_package, node.level, node.module) if node.level else node.module)
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)) is not None:
            found.add(target)
    return found


def package_edges() -> list[tuple[str, str, str]]:
    """(file, from package, to package) for every import between two of the four packages, or from one of them
    into toolkit_testing."""
    edges = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in imported_modules(path):
                top = target.split(".")[0]
                if top in (*PACKAGES, "toolkit_testing") and top != package:
                    edges.append((str(path.relative_to(ROOT)), package, top))
    return edges


def test_no_upward_or_sideways_imports():
    bad = [f"{file}: {source} -> {target}" for file, source, target in package_edges()
           if target in FORBIDDEN[source]]
    assert not bad, "imports against the DAG gancore <- ganeval <- {celebahq, progan}:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_relative_and_by_name_imports(tmp_path, monkeypatch):
    fake = tmp_path / "gancore"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text(
        "import importlib\n"
        "def later():\n"
        "    from ganeval import swd\n"
        "    importlib.import_module('progan.checkpoint')\n"
        "    __import__('celebahq')\n"
        "from . import sources\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imported_modules(fake / "bad.py")
    assert {"ganeval", "progan.checkpoint", "celebahq", "gancore"} <= found


@pytest.mark.parametrize("module", ["ganeval.swd", "ganeval.fid", "ganeval.msssim", "ganeval.kid",
                                    "ganeval.precision_recall", "ganeval.isc", "ganeval.evaluate"])
def test_ganeval_modules_are_not_shadowed_by_functions(module):
    import importlib
    import types

    imported = importlib.import_module(module)
    assert isinstance(imported, types.ModuleType) and imported.__file__.endswith(".py")
    package = importlib.import_module("ganeval")
    attribute = getattr(package, module.split(".")[1], imported)
    assert isinstance(attribute, types.ModuleType), f"ganeval.{module.split('.')[1]} is a {type(attribute)}"
