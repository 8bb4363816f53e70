"""The rooms stay apart: no import cycles, and model/ never imports web or serving code.

The graph is read from the source (no module is imported): every ``import`` and ``from ...
import`` anywhere in a file counts, including those inside functions, because a function-level
import that closes a cycle is still a cycle (it only fails later, at call time).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "app", "train", "bench", "evaluation", "serve", "experiments")
# Web, HTTP and cluster code that the model room must never need.
FORBIDDEN_IN_MODEL = ("gradio", "gradio_client", "fastapi", "starlette", "uvicorn", "ray")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []:
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path, name: str) -> list[str]:
    """Every module name an ``import`` statement in ``path`` asks for (``from a import b``
    gives both ``a`` and ``a.b``: ``b`` may be a submodule)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append(target)
            names += [f"{target}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for target in imported_names(path, name) if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_graph_is_read_from_every_room():
    graph = import_graph()
    assert "model.chat.engine" in graph and "model.chat.turn" in graph["model.chat.engine"]
    assert "app.ui" in graph and "train.cli" in graph
    # A function-level import counts: app/main.py imports the UI inside main().
    assert "app.ui" in graph["app.main"]


def test_cycle_finder_sees_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back():
    found = cycles(import_graph())
    assert not found, "import cycles (each line one cycle):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_model_never_imports_web_or_serving_code():
    offenders = []
    for name, path in project_modules().items():
        if not name.startswith("model"):
            continue
        for target in imported_names(path, name):
            if target.split(".")[0] in FORBIDDEN_IN_MODEL:
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_benchmarks_and_experiments_run_as_modules_without_path_hacks():
    problems = []
    for name, path in project_modules().items():
        text = path.read_text()
        if "sys.path.insert" in text or "sys.path.append" in text:
            problems.append(f"{path.relative_to(ROOT)} edits sys.path")
        if name.split(".")[0] in ("bench", "experiments"):
            if any(t == "tests" or t.startswith("tests.") for t in imported_names(path, name)):
                problems.append(f"{path.relative_to(ROOT)} imports from tests/")
            runnable = path.name != "__init__.py" and not path.name.startswith("_")  # _helpers are imported
            if runnable and '__name__ == "__main__"' not in text:
                problems.append(f"{path.relative_to(ROOT)} has no `if __name__ == \"__main__\"` (python -m {name})")
    assert not problems, "\n".join(problems)
