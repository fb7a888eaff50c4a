"""Architecture guards (docs/architecture.md): one-way layers, no import cycles, function-level imports only for
optional dependencies, no private names imported across modules.

The import graph is read from the source with ``ast``: top-level and function-level ``import`` statements, string
import paths handed to ``importlib`` (``"stable_audio_tools.x.y:name"`` or a relative ``".module"``) and the
builder paths of the model-family registry, which count as imports of the module that calls them. ``from pkg
import name`` through a re-exporting ``__init__`` counts as an import of the module that defines ``name``; the
``__init__`` files themselves are left out.

Imports inside a module-level ``__getattr__`` (PEP 562) are lazy re-exports, kept apart (``LAZY``): they run only
when an old import path asks for a name the module no longer defines, never while any module is imported, so
like an ``__init__`` re-export they cannot form an import cycle and are not function-level imports. They still
obey the layer order.
"""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, FrozenSet, List, Set, Tuple

import pytest

from stable_audio_tools.families import BUILDER_FIELDS, MODEL_FAMILIES

PACKAGE = "stable_audio_tools"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Layer order, lowest first (docs/architecture.md). A module may import modules of lower layers and of its own
# group; groups on the same layer never import each other. The longest matching prefix decides a module's group.
LAYERS: List[List[Tuple[str, Tuple[str, ...]]]] = [
    [("foundation", ("stable_audio_tools.config", "stable_audio_tools.config_schema", "stable_audio_tools.models.config",
                     "stable_audio_tools.audio", "stable_audio_tools.allocator",
                     "stable_audio_tools.plotting", "stable_audio_tools.samplers", "stable_audio_tools.families"))],
    [("data", ("stable_audio_tools.data",)), ("models", ("stable_audio_tools.models",))],
    [("inference", ("stable_audio_tools.inference",)), ("metrics", ("stable_audio_tools.metrics",))],
    [("training", ("stable_audio_tools.training",)), ("interface", ("stable_audio_tools.interface",))],
]

# Import cycles allowed to remain (none). The test fails when a cycle appears that is not listed here, and when a
# listed one is gone (so the list only shrinks).
KNOWN_CYCLES: Set[FrozenSet[str]] = set()

# Function-level imports inside the package, each with its reason; optional dependencies are the only reason.
ALLOWED_FUNCTION_LEVEL: Dict[Tuple[str, str], str] = {
    ("models.builders.conditioners", "models.text_conditioners"): "optional dependencies (transformers, laion_clap)",
}

# Private names imported from another module, until the shared helpers they stand for move (see reasons).
ALLOWED_PRIVATE_IMPORTS: Dict[Tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in ROOT.rglob("*.py")}
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}


def _reexports(package: str) -> Dict[str, str]:
    """name -> defining module for the names an ``__init__`` imports from its submodules."""
    tree = ast.parse(MODULES[package].read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                            ([node.module] if node.module else []))
            for alias in node.names:
                names[alias.asname or alias.name] = base
    return names


def _resolve(name: str, imported: str = "") -> str:
    """The module an import of ``name`` (optionally ``from name import imported``) reaches, or ''."""
    if imported and f"{name}.{imported}" in MODULES:
        name = f"{name}.{imported}"
    elif imported and name in PACKAGES:
        name = _reexports(name).get(imported, name)
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    if name in PACKAGES:  # an import reaching only a re-exporting __init__
        return ""
    return name


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.is_package = module in PACKAGES
        self.depth = 0
        self.in_module_getattr = False
        self.edges: Set[str] = set()
        self.lazy: Set[str] = set()
        self.function_level: Set[str] = set()
        self.private: Set[str] = set()

    def _base(self, level: int, module: str) -> str:
        parts = self.module.split(".")
        if not self.is_package:
            parts = parts[:-1]
        parts = parts[:len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def _add(self, target: str) -> None:
        if target and target != self.module and target.startswith(PACKAGE):
            if self.in_module_getattr:
                self.lazy.add(target)
                return
            self.edges.add(target)
            if self.depth:
                self.function_level.add(target)

    def visit_FunctionDef(self, node: ast.AST) -> None:
        module_getattr = self.depth == 0 and getattr(node, "name", "") == "__getattr__"
        self.in_module_getattr |= module_getattr
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        if module_getattr:
            self.in_module_getattr = False

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """A class body nests: a ``__getattr__`` method inside it is not the module's."""
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(_resolve(alias.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node.level, node.module or "") if node.level else (node.module or "")
        if not base.startswith(PACKAGE) or base == "__future__":
            return
        for alias in node.names:
            target = _resolve(base, alias.name)
            self._add(target)
            if alias.name.startswith("_") and not alias.name.startswith("__") and target and target != self.module:
                self.private.add(target)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        """f-string pieces (``f"{path}.config"``) are not import paths."""

    def visit_Constant(self, node: ast.Constant) -> None:
        """String import paths for ``importlib``: ``"stable_audio_tools.a.b:name"`` or ``".sibling"``."""
        value = node.value
        if not isinstance(value, str) or " " in value or self.module == f"{PACKAGE}.families":
            return
        path, colon, _ = value.partition(":")
        if colon and path.startswith(PACKAGE + ".") and path in MODULES:
            self._add(path)
        elif path.startswith(".") and not path.startswith("..") and len(path) > 1:
            candidate = self._base(1, path[1:])
            if candidate in MODULES:
                self._add(candidate)


def _graph():
    edges, function_level, private, lazy = defaultdict(set), defaultdict(set), defaultdict(set), defaultdict(set)
    for module, path in MODULES.items():
        visitor = _Imports(module)
        visitor.visit(ast.parse(path.read_text()))
        edges[module] = visitor.edges
        function_level[module] = visitor.function_level
        private[module] = visitor.private
        lazy[module] = visitor.lazy
    for family in MODEL_FAMILIES.values():  # registry builders are imported by the module that calls them
        for field, caller in BUILDER_FIELDS.items():
            target = getattr(family, field)
            if target is not None:
                edges[caller].add(_resolve(target.partition(":")[0]))
    return edges, function_level, private, lazy


EDGES, FUNCTION_LEVEL, PRIVATE, LAZY = _graph()


def _short(module: str) -> str:
    return module[len(PACKAGE) + 1:]


def _group(module: str) -> Tuple[int, str]:
    best = (-1, "", "")
    for rank, groups in enumerate(LAYERS):
        for group, prefixes in groups:
            for prefix in prefixes:
                if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[2]):
                    best = (rank, group, prefix)
    return best[0], best[1]


def _cycles() -> List[FrozenSet[str]]:
    graph = {m: {t for t in EDGES[m] if t not in PACKAGES} for m in MODULES if m not in PACKAGES}
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if m != PACKAGE and not m.startswith(f"{PACKAGE}.configs")
                     and _group(m)[0] < 0)
    assert not missing, f"add these modules to LAYERS (and docs/architecture.md): {missing}"


def test_no_upward_or_sideways_imports():
    bad = []
    for module, targets in EDGES.items():
        if module in PACKAGES:
            continue
        rank, group = _group(module)
        for target in targets | LAZY[module]:
            t_rank, t_group = _group(target)
            if t_rank > rank or (t_rank == rank and t_group != group):
                bad.append(f"{_short(module)} ({group}) imports {_short(target)} ({t_group})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_beyond_the_known_ones():
    cycles = set(_cycles())
    new = [sorted(map(_short, c)) for c in cycles - KNOWN_CYCLES]
    gone = [sorted(map(_short, c)) for c in KNOWN_CYCLES - cycles]
    assert not new, f"import cycles: {new}"
    assert not gone, f"these cycles are gone (or changed): remove them from KNOWN_CYCLES: {gone}"


def test_function_level_imports_are_only_the_allowed_ones():
    found = {(_short(m), _short(t)) for m, targets in FUNCTION_LEVEL.items() for t in targets}
    assert found - set(ALLOWED_FUNCTION_LEVEL) == set(), "move these imports to the top of the module"
    assert set(ALLOWED_FUNCTION_LEVEL) - found == set(), "these are gone: remove them from ALLOWED_FUNCTION_LEVEL"


def test_no_private_names_across_modules():
    found = {(_short(m), _short(t)) for m, targets in PRIVATE.items() for t in targets}
    assert found - set(ALLOWED_PRIVATE_IMPORTS) == set(), "make these names public or move them to a shared module"
    assert set(ALLOWED_PRIVATE_IMPORTS) - found == set(), "these are gone: remove them from ALLOWED_PRIVATE_IMPORTS"


@pytest.mark.parametrize("model_type", sorted(MODEL_FAMILIES))
def test_registry_builders_resolve_in_their_layer(model_type):
    from stable_audio_tools.families import resolve_builder

    family = MODEL_FAMILIES[model_type]
    for field, caller in BUILDER_FIELDS.items():
        path = getattr(family, field)
        if path is None:
            continue
        if field == "ui":
            pytest.importorskip("gradio")
        assert callable(resolve_builder(path)), (field, path)
        target = _resolve(path.partition(":")[0])
        assert _group(target)[0] <= _group(caller)[0], (field, path)


def test_the_guard_sees_what_it_guards(tmp_path):
    """The scanner finds function-level, string and re-exported imports (so the checks above can fail)."""
    assert f"{PACKAGE}.models.text_conditioners" in FUNCTION_LEVEL[f"{PACKAGE}.models.builders.conditioners"]
    assert f"{PACKAGE}.models.builders.autoencoders" in LAZY[f"{PACKAGE}.models.autoencoders"]  # a lazy re-export
    assert f"{PACKAGE}.models.builders.autoencoders" not in EDGES[f"{PACKAGE}.models.autoencoders"]
    assert f"{PACKAGE}.models.oobleck" in EDGES[f"{PACKAGE}.models.coder_types"]  # a string import path
    assert f"{PACKAGE}.models.builders.lm" in EDGES[f"{PACKAGE}.models.factory"]  # a registry builder path
    assert f"{PACKAGE}.samplers.dispatch" in EDGES[f"{PACKAGE}.models.builders.diffusion"]  # through samplers/__init__
    assert _group(f"{PACKAGE}.models.config") == (0, "foundation")
    assert _group(f"{PACKAGE}.training.demo_base") == (3, "training")
