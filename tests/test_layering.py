"""The package's import graph: no cycles, and each layer imports only the layers below it.

The layers of ``src/farslip``, bottom to top (README, "Layout"):

1. **base**: ``farslip.version``, ``farslip.atomic`` (the one atomic-write helper), ``farslip.config``
   (the typed settings of a training run),
   ``farslip.transforms`` (the recipe's image transforms), ``farslip.losses``;
2. **models**: ``farslip.models`` and the public API ``farslip`` (its ``__init__`` re-exports it);
3. **command-line plumbing**: ``farslip.cli`` and ``farslip.errors`` (the help formatter, the model / device flags, how a
   user error is printed, the dispatcher and the small ``download`` / ``models`` commands);
4. **data**: ``farslip.data`` (the training formats, CSV readers, views);
5. **evaluation and training**: ``farslip.eval`` (registry, readers, metrics, the three tasks,
   reports) and ``farslip.train``;
6. **tools** (not library code; nothing below imports them): the synthetic world
   ``farslip.synth``, the apps, the demo, the evaluation's command line (``farslip.eval.cli``,
   ``farslip.eval.seed``, ``python -m farslip.eval``) and the ``__main__`` shims. The
   benchmarks are not in the package at all: ``benchmarks/`` at the checkout's root.

Layers 1-5 are the core. A module may import its own layer and the layers below; in particular
the model layer never imports the data layer, and the core never imports a tool.

The graph is read from the source (tests/_imports.py), every import statement counted, inside
functions too; ``importlib.import_module`` by name is confined to the dispatcher (checked here).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

from tests._imports import PACKAGE, ROOT, cycles, describe, import_graph, module_files

# (layer, module prefixes); a module belongs to the layer of its longest matching prefix (``farslip``
# itself matches only the package's __init__).
LAYERS = [
    ("base", ["farslip.version", "farslip.atomic", "farslip.config", "farslip.transforms", "farslip.losses"]),
    ("models", ["farslip", "farslip.models"]),
    ("command-line plumbing", ["farslip.cli", "farslip.errors"]),
    ("data", ["farslip.data"]),
    ("evaluation and training", ["farslip.eval", "farslip.train"]),
    ("tools", ["farslip.synth", "farslip.apps", "farslip.demo", "farslip.eval.cli", "farslip.eval.seed",
               "farslip.eval.__main__", "farslip.__main__", "farslip.train.__main__"]),
]
TOOLS = len(LAYERS) - 1


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "farslip" and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS (and to the README's layout)")
    return rank


GRAPH = import_graph()


def _reachable(start: set[str]) -> dict[str, list[str]]:
    """Every module reachable from ``start``, with one import path to it."""
    paths = {m: [m] for m in start}
    todo = list(start)
    while todo:
        here = todo.pop()
        for there in GRAPH[here]:
            if there not in paths:
                paths[there] = paths[here] + [there]
                todo.append(there)
    return paths


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """The reader itself, on a small package with a known cycle and a known non-cycle."""
    pkg = tmp_path / "farslip"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import thing\n",
        "a.py": "thing = 1\ndef later():\n    from .sub import b  # inside a function: counts\n",
        "sub/__init__.py": "",
        "sub/b.py": "import farslip.sub.c\n",
        "sub/c.py": "from .. import a\n",  # a -> b -> c -> a: the cycle
        "d.py": textwrap.dedent("""\
            from typing import TYPE_CHECKING
            import os, farslip.a
            if TYPE_CHECKING:
                from farslip import e  # ignored
            """),
        "e.py": "from farslip import d\n",  # e -> d, and d -> e only under TYPE_CHECKING: no cycle
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["farslip"] == {"farslip.a": 1}
    assert graph["farslip.a"] == {"farslip.sub.b": 3}
    assert graph["farslip.sub.b"] == {"farslip.sub.c": 1}
    assert graph["farslip.sub.c"] == {"farslip.a": 1}
    assert graph["farslip.d"] == {"farslip.a": 2} and graph["farslip.e"] == {"farslip.d": 1}
    found = cycles(graph)
    assert [members for members, _ in found] == [["farslip.a", "farslip.sub.b", "farslip.sub.c"]]
    assert found[0][1] == ["farslip.a", "farslip.sub.b", "farslip.sub.c", "farslip.a"]


def test_every_module_is_in_a_layer():
    unplaced = []
    for module in module_files():
        try:
            layer_of(module)
        except LookupError as err:
            unplaced.append(str(err))
    assert not unplaced, "\n".join(unplaced)
    assert layer_of("farslip.models.factory") < layer_of("farslip.data.rs5m") < layer_of("farslip.eval.metrics")
    assert layer_of("farslip.eval.cli") == layer_of("farslip.synth.world") == layer_of("farslip.demo") == TOOLS


def test_benchmarks_live_in_one_place_outside_the_installed_library():
    """``benchmarks/`` at the checkout's root (not under ``src/``, so ``pip install`` leaves it
    out), one module per part of ``scripts/bench.py``; no benchmark module inside the package."""
    import importlib.util

    inside = [m for m in module_files() if "bench" in m.rsplit(".", 1)[-1]]
    assert inside == []
    folder = ROOT / "benchmarks"
    assert sorted(p.stem for p in folder.glob("*.py")) == ["__init__", "data", "eval", "model", "train",
                                                           "train_resume"]
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert sorted(script.PARTS.values()) == ["benchmarks.data", "benchmarks.eval", "benchmarks.model",
                                             "benchmarks.train"]
    # the library never imports them (they time it; it does not need them)
    reverse = []
    for module, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            reverse += [f"{module}:{node.lineno}" for n in names if n.split(".")[0] == "benchmarks"]
    assert reverse == []



def test_no_import_cycles():
    found = cycles(GRAPH)
    message = "\n".join(f"cycle among {', '.join(members)}:\n  {describe(cycle, GRAPH)}" for members, cycle in found)
    assert not found, "import cycles between farslip modules:\n" + message


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    files = module_files()
    for module, imported in sorted(GRAPH.items()):
        for target, line in sorted(imported.items()):
            if layer_of(target) > layer_of(module):
                upward.append(f"{files[module].relative_to(ROOT)}:{line}: {module} ({LAYERS[layer_of(module)][0]}) "
                              f"imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


def test_the_model_layer_does_not_reach_the_data_layer():
    models = {m for m in GRAPH if (m == "farslip.models" or m.startswith("farslip.models.")) and layer_of(m) < TOOLS}
    reached = _reachable(models)
    data = sorted(m for m in reached if m == "farslip.data" or m.startswith("farslip.data."))
    assert not data, "\n".join(" -> ".join(reached[m]) for m in data)


def test_the_core_does_not_reach_a_tool():
    core = {m for m in GRAPH if layer_of(m) < TOOLS}
    reached = _reachable(core)
    tools = sorted(m for m in reached if layer_of(m) == TOOLS)
    assert not tools, "\n".join(" -> ".join(reached[m]) for m in tools)


def test_only_the_dispatcher_imports_modules_by_name():
    """The graph cannot follow ``importlib.import_module("farslip...")``; only farslip.cli's table may."""
    found = []
    for module, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ("import_module", "__import__"):
                    found.append(f"{module}:{node.lineno}")
    assert [f.split(":")[0] for f in found] == ["farslip.cli"], found


def test_importing_the_core_loads_no_tool_at_run_time():
    """An independent check of the reader on what Python itself loads: the core's modules import no
    tool and the model layer no data module (module-level imports only; the ast test covers functions)."""
    core = sorted(m for m in GRAPH if layer_of(m) < TOOLS and not m.endswith("__main__"))
    code = textwrap.dedent(f"""
        import importlib, sys
        core = {core!r}
        for name in core:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.startswith("farslip"))
        print("\\n".join(loaded))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert set(core) <= set(loaded)
    assert not [m for m in loaded if layer_of(m) == TOOLS]
    models_only = subprocess.run([sys.executable, "-c", "import sys, farslip.models; print(' '.join(sys.modules))"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert models_only.returncode == 0, models_only.stderr
    assert not [m for m in models_only.stdout.split() if m.startswith("farslip.data")]

