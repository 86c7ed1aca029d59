#!/usr/bin/env bash
# Fails when the top-level modules of src/ (src/X.rs and src/X/) import each other in a cycle.
# The graph is drawn from the code's own paths: every `crate::X` in src/X.rs or src/X/**
# (comments left out) is an edge X -> Y. Cycles listed in scripts/module-cycles.allow are
# accepted as they are, and only as they are; any other cycle is printed and the check fails.
# `--dot` prints the graph (Graphviz) instead, for ARCHITECTURE.md's diagram.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

src = "src"
modules = sorted(set(
    n[:-3] if n.endswith(".rs") else n
    for n in os.listdir(src)
    if (n.endswith(".rs") or os.path.isdir(os.path.join(src, n)))
    and n not in ("lib.rs", "main.rs")
))
edges = {m: set() for m in modules}
path_re = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
for m in modules:
    files = [os.path.join(src, m + ".rs")] if os.path.isfile(os.path.join(src, m + ".rs")) else []
    for root, _, names in os.walk(os.path.join(src, m)):
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                code = line.split("//", 1)[0]
                for target in path_re.findall(code):
                    if target != m and target in edges:
                        edges[m].add(target)

if sys.argv[1:] == ["--dot"]:
    print("digraph modules {")
    for m in modules:
        for t in sorted(edges[m]):
            print(f"  {m} -> {t};")
    print("}")
    sys.exit(0)

# Strongly connected components (Tarjan): every component of more than one module is a cycle.
index, low, stack, on_stack, components = {}, {}, [], set(), []
def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v); on_stack.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = set()
        while True:
            w = stack.pop(); on_stack.discard(w); component.add(w)
            if w == v:
                break
        if len(component) > 1:
            components.append(component)
sys.setrecursionlimit(10000)
for m in modules:
    if m not in index:
        visit(m)

allowed = []
with open("scripts/module-cycles.allow", encoding="utf-8") as fh:
    for line in fh:
        line = line.split("#", 1)[0].split()
        if line:
            allowed.append(set(line))

def a_cycle(component):
    """One cycle through the component, as a path of modules."""
    start = min(component)
    path, seen = [start], {start}
    def walk(v):
        for w in sorted(edges[v] & component):
            if w == start and len(path) > 1:
                return True
            if w not in seen:
                seen.add(w); path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False
    walk(start)
    return " -> ".join(path + [start])

failed = False
for component in components:
    cycle = a_cycle(component)
    if component in allowed:
        print(f"allowed (scripts/module-cycles.allow, to be removed): {cycle}")
    else:
        failed = True
        print(f"module cycle: {cycle}", file=sys.stderr)
        for m in sorted(component):
            for t in sorted(edges[m] & component):
                print(f"  {m} uses crate::{t}", file=sys.stderr)
for entry in allowed:
    if not any(entry <= component for component in components):
        print(f"note: allowed cycle {' '.join(sorted(entry))} no longer exists: remove its line", file=sys.stderr)
if failed:
    sys.exit(1)
print(f"no module cycles beyond the allowed ones ({len(modules)} top-level modules)")
PY
