"""Import modules with only the packages that ``setup.py``'s ``install_requires`` brings in (run as a script).

    python tests/declared_deps_only.py ROOT MODULE [MODULE ...]

Reads ``install_requires`` from ``ROOT/setup.py``, follows the installed distributions' own (non-extra)
requirements, and blocks every other top-level module: a real ``import`` of one raises ``ModuleNotFoundError`` and
``importlib.util.find_spec`` reports it missing, as on a fresh machine after ``pip install -e .``. Then imports
each MODULE (``ROOT`` first on ``sys.path``) and exits 0; an undeclared dependency fails with a traceback. Prints
the blocked modules that were probed and skipped softly (optional imports of the dependencies).
"""
import ast
import importlib
import importlib.metadata as metadata
import importlib.util
import re
import sys
from pathlib import Path


def _requirement_name(requirement: str) -> str:
    return re.split(r"[ <>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared_distributions(setup_py: Path) -> set:
    """Names of the distributions ``install_requires`` pulls in, transitively (as installed here)."""
    requirements = []
    for node in ast.walk(ast.parse(setup_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            requirements = [ast.literal_eval(element) for element in node.value.elts]
    seen, todo = set(), [_requirement_name(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def main() -> None:
    root, modules = Path(sys.argv[1]), sys.argv[2:]
    distributions = declared_distributions(root / "setup.py")
    allowed = {module for module, dists in metadata.packages_distributions().items()
               if any(d.lower().replace("_", "-") in distributions for d in dists)}
    allowed |= set(sys.stdlib_module_names) | {"stable_audio_tools"} | {p.stem for p in root.glob("*.py")}
    blocked = set()

    def is_blocked(name: str) -> bool:
        top = name.split(".")[0]
        if name.startswith(".") or top.startswith("_") or top in allowed:
            return False
        blocked.add(top)
        return True

    class Blocker:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if is_blocked(name):
                raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r} (not a declared dependency)",
                                          name=name)
            return None

    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        return None if is_blocked(name) else real_find_spec(name, package)

    sys.meta_path.insert(0, Blocker())
    importlib.util.find_spec = find_spec
    sys.path.insert(0, str(root))
    for module in modules:
        importlib.import_module(module)
    print("probed and skipped:", " ".join(sorted(blocked)))


if __name__ == "__main__":
    main()
