"""The rule of the house, checked on the code itself: the library (the flat modules a user imports) never
imports the runner or a tool, the PEFT tuner never imports the runner or a tool, the runner never imports a
tool; no module imports itself back through others (no import circles); importing a module does no work
beyond definitions. Every import counts, those inside functions too (only `if TYPE_CHECKING:` blocks, which
never run, are left out)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "idspam"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "conf" not in p.relative_to(PACKAGE).parts}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The idspam modules `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "idspam")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "idspam":
                    continue
                submodules = {f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in known}
                found.update(submodules)
                if len(submodules) < len(child.names):  # names defined in the module itself
                    found.add(target)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def wing(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in ("tools", "__main__"):
        return "tools"
    if len(parts) > 1 and parts[1] in ("runner", "run"):
        return "runner"
    if len(parts) > 1 and parts[1] == "tuner":
        return "tuner"
    return "library"


FORBIDDEN = {"library": {"runner", "tools"}, "tuner": {"runner", "tools"}, "runner": {"tools"}, "tools": set()}


def test_the_wings_import_only_downwards():
    bad = [f"{a} ({wing(a)}) imports {b} ({wing(b)})" for a, targets in graph().items() for b in sorted(targets)
           if wing(b) in FORBIDDEN[wing(a)]]
    assert not bad, "\n".join(bad)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    assert circles(graph()) == []


def test_the_circle_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_function_level_and_relative_imports():
    edges = graph()
    assert "idspam.tuner.config" in edges["idspam.tuner"]  # inside register()
    assert "idspam.runner.lower_cache" in edges["idspam.runner.train"]  # `from .lower_cache import`
    assert "idspam.families" in edges["idspam.injection"]


# Top-level statements that are definitions: imports, functions, classes, assignments, the docstring,
# `if TYPE_CHECKING:` and `if __name__ == "__main__":`. The one registration at import the house allows:
# idspam/__init__.py installs the post-import hook that registers the methods with PEFT.
ALLOWED_CALLS = {("idspam", "_install_peft_hook")}


def work_at_import(name: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    bad = []
    for k, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                             ast.Assign, ast.AnnAssign)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and k == 0:
            continue  # the docstring
        if isinstance(node, ast.If) and (is_type_checking(node) or "__name__" in ast.unparse(node.test)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                (name, ast.unparse(node.value.func)) in ALLOWED_CALLS:
            continue
        where = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path.name
        bad.append(f"{where}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return bad


def test_importing_a_module_does_no_work():
    bad = [line for name, path in modules().items() if not name.endswith("__main__")
           for line in work_at_import(name, path)]
    assert not bad, "\n".join(bad)


def test_the_work_check_catches_a_call_at_import(tmp_path):
    fake = tmp_path / "mod.py"
    fake.write_text('"""doc"""\nimport os\nlog = os.getcwd()\nos.makedirs("x")\ntry:\n    import y\n'
                    'except ImportError:\n    pass\n')
    assert work_at_import("x.mod", fake) == ['mod.py:4: os.makedirs(\'x\')', "mod.py:5: try:"]


BLOCK_HEAVY = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "peft", "lightning", "hydra", "datasets"):
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
""")


@pytest.mark.parametrize("module", ["idspam", "idspam.tools.cli", "idspam.errors", "idspam.config"])
def test_light_modules_import_without_torch_transformers_or_peft(module):
    code = BLOCK_HEAVY + f"import {module}\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_block_is_real():
    code = BLOCK_HEAVY + "import idspam.injection\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked: torch" in proc.stderr


def test_the_head_schema_names_every_head_of_the_registry():
    from idspam.config import HEAD_TYPES
    from idspam.heads import HEADS

    assert tuple(HEADS) == HEAD_TYPES
