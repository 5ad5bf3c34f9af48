"""How the code is laid out: no import circles between pimserve's modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """pimserve modules imported when ``path`` is imported (not inside functions, not under
    ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, base]) if base else ".".join(up)
                subs = {f"{base}.{a.name}" for a in node.names} & modules
                # `from pkg import submodule` needs the submodule, not the package's names
                if len(subs) < len(node.names):
                    out.add(base)
                out.update(subs)

    visit(tree.body)
    return {m for m in out if m in modules}


def test_no_import_circles():
    files = {_module_name(p): p for p in (SRC / "pimserve").rglob("*.py")}
    modules = set(files)
    # a module's own packages are already being imported when it runs: not an edge
    graph = {m: {n for n in _top_level_imports(p, m, modules) - {m}
                 if not m.startswith(n + ".")} for m, p in files.items()}
    # importing a package runs its __init__; a module's own package does not import it back
    cycles = []
    state: dict[str, int] = {}

    def dfs(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                dfs(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert cycles == [], cycles
