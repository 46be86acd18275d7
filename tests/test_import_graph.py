"""No import cycle anywhere in the repository's packages (the library nd_det and the applications
under projects/), counting imports made inside functions too: a module that imports another which
imports it back, at any depth, is a design knot even when Python resolves it lazily.  Built from
the source with ``ast``, nothing is imported."""

import ast
import os

from .helpers.tiny_distill import REPO


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for nd_det and every package under projects/."""
    roots = [(REPO, "nd_det")] + [
        (os.path.join(REPO, "projects"), name)
        for name in sorted(os.listdir(os.path.join(REPO, "projects")))
        if os.path.isfile(os.path.join(REPO, "projects", name, "__init__.py"))
    ]
    found = {}
    for base, package in roots:
        for folder, _, files in os.walk(os.path.join(base, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    """The known modules that ``module`` imports (a name imported from a package counts as its
    submodule when there is one, else as the package itself)."""
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in known else base)
    return {t for t in targets if t in known and t != module}


def _cycle(graph: dict[str, set[str]]):
    """One cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_repositorys_import_graph_has_no_cycle():
    modules = _modules()
    graph = {m: _imports(m, path, set(modules)) for m, path in modules.items()}
    assert len(graph) > 100 and any(graph.values())
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
