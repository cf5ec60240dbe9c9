"""The import graph runs one way: data -> models/weights -> experts -> orchestrator -> training
-> eval -> jobs -> entry points, with no cycle between packages and no function-level import
of our own modules to hide one. Read from the source (ast), so it sees every import."""

import ast
import pathlib

import leeroo_jax

ROOT = pathlib.Path(leeroo_jax.__file__).parent
# Lower rank = lower layer; a module may import its own package or lower ranks only.
RANK = {"errors": 0, "fileio": 0, "distributed": 0, "sharding": 0, "data": 1, "models": 2, "weights": 3,
        "compile_cache": 4, "experts": 4, "orchestrator": 5, "training": 6, "eval": 7, "jobs": 8, "config": 9,
        "train": 10, "score": 10, "demo": 10, "selfplay": 10,
        "planning": 8, "plan": 10, "serving": 9, "serve": 10,
        "__init__": 11}  # the package's `from leeroo_jax import Orchestrator` (lazy, below)
# Lazy imports of an optional dependency's wrapper inside the same package (not a cycle dodge).
# The package's lazy `Orchestrator` keeps `import leeroo_jax` light for entry points that never serve.
ALLOWED_LOCAL = {("weights/assets.py", "leeroo_jax.weights.gguf"),
                 ("__init__.py", "leeroo_jax.serving.api.Orchestrator")}


def _unit(module: str) -> str:
    return module.split(".")[1]


def _imports():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        top = set(id(n) for n in tree.body)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("leeroo_jax"):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("leeroo_jax")]
            for name in names:
                yield rel, name, id(node) in top or _under_main(tree, node)


def _under_main(tree, node) -> bool:
    for stmt in tree.body:  # `if __name__ == "__main__":` blocks run only as a script
        if isinstance(stmt, ast.If) and "__main__" in ast.unparse(stmt.test):
            if any(n is node for n in ast.walk(stmt)):
                return True
    return False


def test_every_module_is_ranked():
    units = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.glob("*") if p.name != "__init__.py"}
    units -= {"__pycache__"}
    assert units <= set(RANK), units - set(RANK)


def test_imports_run_one_way():
    bad = []
    for rel, name, _ in _imports():
        src, dst = rel.split("/")[0].removesuffix(".py"), _unit(name)
        if src != dst and RANK[dst] > RANK[src]:
            bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_of_our_modules():
    bad = [f"{rel}: {name}" for rel, name, top in _imports() if not top and (rel, name) not in ALLOWED_LOCAL]
    assert not bad, "\n".join(bad)


def test_no_cycle_between_packages():
    edges = {}
    for rel, name, _ in _imports():
        src, dst = rel.split("/")[0].removesuffix(".py"), _unit(name)
        if src != dst:
            edges.setdefault(src, set()).add(dst)
    state = {}

    def visit(u, stack):
        state[u] = 1
        for v in edges.get(u, ()):
            assert state.get(v) != 1, f"cycle: {' -> '.join(stack + [u, v])}"
            if v not in state:
                visit(v, stack + [u])
        state[u] = 2

    for u in list(edges):
        if u not in state:
            visit(u, [])
