"""Measure the package's shape: import cycles, literal config defaults in code, largest modules.

    python scripts/architecture.py            # the report
    python scripts/architecture.py --cycles   # exit 1 if any import cycle (tests/test_architecture.py)

Imports are counted wherever they are written (module level or inside a function), as a reader
follows them; `if TYPE_CHECKING:` imports are left out. A literal config default is a call
`<config>.get("key", <literal>)` whose receiver names a config node (cfg, *_cfg, cfg.<group>, ...):
a value the YAML tree also holds, so the two can disagree.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dlrun"
CONFIG_RECEIVER = re.compile(r"(^|\.)(cfg|\w+_cfg|config|cfg\.\w+)$|^cfg\.")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dlrun modules `name` imports (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
            for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("dlrun"):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {name: imports(name, path, known) for name, path in mods.items()}
    # a package's __init__ importing its own submodules (registry loading) is not a cycle of design
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def literal_defaults() -> list[str]:
    """`path:line receiver.get("key", literal)` for every literal config default in the package."""
    found = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                continue
            default = node.args[1]
            literal = isinstance(default, ast.Constant) or (
                isinstance(default, ast.List | ast.Tuple) and all(isinstance(e, ast.Constant) for e in default.elts))
            receiver = ast.unparse(node.func.value)
            if literal and CONFIG_RECEIVER.search(receiver):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    return found


def largest(n: int = 10) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in modules().values()]
    return sorted(sizes, reverse=True)[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", action="store_true", help="only check import cycles (exit 1 if any)")
    ap.add_argument("--defaults", action="store_true", help="list every literal config default")
    args = ap.parse_args()
    found = cycles(graph())
    print(f"import cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))
    if args.cycles:
        return 1 if found else 0
    defaults = literal_defaults()
    print(f"literal config defaults in code: {len(defaults)}")
    if args.defaults:
        for line in defaults:
            print("  " + line)
    print(f"modules: {len(modules())}, lines: {sum(len(p.read_text().splitlines()) for p in modules().values())}")
    print("largest modules:")
    for lines, path in largest():
        print(f"  {lines:5d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
