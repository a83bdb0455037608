"""Imports inside loopkit run one way: no module imports, at any depth and in any function, a
module that imports it back (as nanoGPT's model.py imports neither train.py nor sample.py)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "loopkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the loopkit modules it imports (module level and inside functions alike)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in files and n != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_loopkit():
    """Imports run one way (as nanoGPT's model.py imports neither train.py nor sample.py): errors,
    sections, layout at the bottom; config and tasks; model; runs and tracing; train, evaluate,
    early exit, analysis; the command line on top. Function-level imports count too."""
    graph = import_graph()
    assert "loopkit.model" in graph and "loopkit.config" in graph["loopkit.model"]  # the graph is read
    assert cycles(graph) == []


def test_python_dash_m_loopkit_is_the_command(tmp_path):
    """`python -m loopkit` runs the same command line as the `loopkit` script: its help, and a user
    error as one line with exit status 2."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    shown = subprocess.run([sys.executable, "-m", "loopkit", "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: loopkit")
    failed = subprocess.run([sys.executable, "-m", "loopkit", "eval", str(tmp_path / "no_run")],
                            capture_output=True, text=True, env=env)
    assert failed.returncode == 2
    assert failed.stderr.startswith("loopkit: error: ") and failed.stderr.count("\n") == 1


def test_importing_a_part_imports_only_what_it_needs():
    """`import loopkit` imports nothing (loopkit.load is looked up on first use): the model-agnostic
    fixed-point tools load no task and no python-chess, and the command line reaches --help without
    torch (1.4 s -> 0.15 s on the 2-core CPU)."""
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             "print(' '.join(m for m in ('torch', 'chess', 'loopkit.tasks', 'loopkit.api', 'matplotlib') "
             "if m in sys.modules))")
    loaded = {module: set(subprocess.run([sys.executable, "-c", probe, module], capture_output=True, text=True,
                                         check=True, cwd=PACKAGE.parent).stdout.split())
              for module in ("loopkit", "loopkit.cli", "loopkit.fixedpoint")}
    assert loaded == {"loopkit": set(), "loopkit.cli": set(), "loopkit.fixedpoint": {"torch"}}
    done = subprocess.run([sys.executable, "-c", "import loopkit; print(loopkit.load.__module__)"],
                          capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert done.stdout.strip() == "loopkit.api"
