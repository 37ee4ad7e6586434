"""The package's shape, checked from its source (see docs/ARCHITECTURE.md): who may import whom, one sampling path,
no import cycles, short functions, and a ``weights/`` folder that holds models, not code.

Imports are read with ``ast`` (module level and inside functions alike: a lazy import is still a dependency), so the
checks need no import of the package and fail with the offending modules named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rssr_cli"
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), filename=str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported name refers to (``rssr_cli.methods.diffusion.sample_tiles`` ->
    ``rssr_cli.methods.diffusion``), or None outside the package."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Package modules imported anywhere in ``module`` (``from pkg import sub`` counts as importing ``pkg.sub``
    when ``sub`` is a module)."""
    out: set[str] = set()
    package = module if module in MODULES and (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists() \
        else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: _imports(m, tree) for m, tree in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def _reaches(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in GRAPH[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_the_import_graph_sees_the_package() -> None:
    # The checks below would pass vacuously on an empty graph.
    assert "rssr_cli.methods.diffusion" in GRAPH["rssr_cli.evaluate"]
    assert "rssr_cli.diffusion.samplers" in GRAPH["rssr_cli.methods.diffusion"]


def test_no_import_cycles() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_evaluation_does_not_depend_on_training() -> None:
    reached = {m for m in _reaches("rssr_cli.evaluate") if m.startswith("rssr_cli.train")}
    assert not reached, f"rssr_cli.evaluate reaches {sorted(reached)}"


@pytest.mark.parametrize("ground", ["rssr_cli.metrics", "rssr_cli.patches", "rssr_cli.bands", "rssr_cli.atomic",
                                    "rssr_cli.degrade", "rssr_cli.errors", "rssr_cli.lock", "rssr_cli.interrupt",
                                    "rssr_cli.diskspace", "rssr_cli.workers", "rssr_cli.world"])
def test_ground_floor_modules_import_no_upper_floor(ground: str) -> None:
    if ground not in GRAPH:
        pytest.skip(f"{ground} does not exist")
    upper = ("rssr_cli.train", "rssr_cli.evaluate", "rssr_cli.pipeline", "rssr_cli.methods", "rssr_cli.cli")
    reached = sorted(m for m in _reaches(ground) if m.startswith(upper))
    assert not reached, f"{ground} reaches {reached}"


def test_only_one_module_calls_the_samplers() -> None:
    samplers = {"lr_start_sample", "ddim_sample", "ddpm_sample"}
    callers = set()
    for module, tree in MODULES.items():
        if module.startswith("rssr_cli.diffusion"):
            continue  # where they are defined and re-exported
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in samplers:
                    callers.add(module)
    assert callers == {"rssr_cli.methods.diffusion"}, callers


def test_the_library_never_imports_the_cli() -> None:
    offenders = sorted(m for m, deps in GRAPH.items() if not m.startswith("rssr_cli.cli")
                       and m != "rssr_cli.__main__" and any(d.startswith("rssr_cli.cli") for d in deps))
    assert not offenders, offenders


def test_no_function_over_the_limit() -> None:
    long = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, long


def test_weights_folder_holds_no_code() -> None:
    code = sorted(p.name for p in (ROOT / "weights").rglob("*.py"))
    assert not code, f"weights/ holds scripts {code}; they belong in scripts/"


def test_scripts_use_only_public_names() -> None:
    """scripts/ reproduce the model card through the public API, so refactors inside the package cannot break them
    silently: no private names, no modules that do not exist."""
    private = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rssr_cli"):
                assert _resolve(node.module) == node.module, f"{path.name}: no module {node.module}"
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private


#: docs/ARCHITECTURE.md's floors, bottom up: a module may import its own floor and those below.
FLOORS: list[tuple[str, ...]] = [
    ("rssr_cli.errors", "rssr_cli.version", "rssr_cli.atomic", "rssr_cli.bands", "rssr_cli.degrade",
     "rssr_cli.filters", "rssr_cli.metrics", "rssr_cli.patches", "rssr_cli.devices", "rssr_cli.memory",
     "rssr_cli.diffusion", "rssr_cli.model", "rssr_cli.lock", "rssr_cli.interrupt", "rssr_cli.diskspace", "rssr_cli.workers",
     "rssr_cli.world"),
    ("rssr_cli.scene", "rssr_cli.aoi", "rssr_cli.tiling", "rssr_cli.encoding", "rssr_cli.cog", "rssr_cli.preview",
     "rssr_cli.scratch", "rssr_cli.input_checks", "rssr_cli.stac", "rssr_cli.safe", "rssr_cli.stac_item"),
    ("rssr_cli.weights", "rssr_cli.methods"),
    ("rssr_cli.strips", "rssr_cli.infer", "rssr_cli.blend", "rssr_cli.validity", "rssr_cli.sink", "rssr_cli.resume",
     "rssr_cli.stream", "rssr_cli.pipeline", "rssr_cli.scene_info", "rssr_cli.evaluate", "rssr_cli.train"),
    ("rssr_cli.cli", "rssr_cli.__main__", "rssr_cli"),
]


def _floor(module: str) -> int:
    for i, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "rssr_cli") or module == "rssr_cli":
            return i if module != "rssr_cli" else len(FLOORS) - 1
    raise AssertionError(f"{module} is on no floor: add it to FLOORS and docs/ARCHITECTURE.md")


def test_every_module_imports_only_its_floor_and_below() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps if _floor(d) > _floor(m))
    assert not upward, upward
