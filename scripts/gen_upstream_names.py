"""Generate ``tests/fixtures/upstream_public_names.json``: upstream stable-audio-tools' public import surface.

Run once per upstream release, on upstream's *unpacked* source (the wheel or sdist), never importing it::

    pip download stable-audio-tools==0.0.19 --no-deps -d /tmp/up && cd /tmp/up && unzip -q *.whl
    python scripts/gen_upstream_names.py /tmp/up --version 0.0.19

The source is only parsed with :mod:`ast`. What counts as a public name of a module ``stable_audio_tools.X``:

* every top-level ``class`` and ``def`` (``async def`` too) whose name does not start with ``_``;
* in a package ``__init__.py``: every name it imports explicitly (``from .factory import create_model_from_config``)
  and, for ``from .mod import *``, the public classes and functions that ``mod`` defines at top level (upstream's
  modules have no ``__all__``, so a star import exports them).

Top-level *assignments* are not counted: in upstream they are type aliases (``FeatureMapType``), constants, loggers,
the ``ENABLE_TORCH_COMPILE`` switch and the Gradio modules' global model state, none of which scripts import as API.
No name is excluded otherwise. ``tests/test_upstream_names.py`` checks every listed name against this package.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Dict, List

PACKAGE = "stable_audio_tools"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _definitions(tree: ast.Module) -> List[str]:
    """Public top-level class and function names, in source order, without repeats."""
    names = [node.name for node in tree.body
             if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")]
    return list(dict.fromkeys(names))


def _resolve(package: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def collect(root: Path) -> Dict[str, List[str]]:
    """``{module path: [public names]}`` for every ``.py`` file below ``root / stable_audio_tools``."""
    package_dir = root / PACKAGE
    if not package_dir.is_dir():
        raise SystemExit(f"{package_dir} does not exist: pass the directory the upstream wheel/sdist was unpacked into")
    trees = {_module_name(root, p): (p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
             for p in sorted(package_dir.rglob("*.py"))}
    surface: Dict[str, List[str]] = {}
    for module, (path, tree) in trees.items():
        names = _definitions(tree)
        if path.name == "__init__.py":
            for node in tree.body:
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _resolve(module, node)
                for alias in node.names:
                    if alias.name == "*":
                        if source not in trees:
                            raise SystemExit(f"{path}: star import from {source}, which is not in the package")
                        names.extend(_definitions(trees[source][1]))
                    elif not (alias.asname or alias.name).startswith("_"):
                        names.append(alias.asname or alias.name)
        surface[module] = list(dict.fromkeys(names))
    return surface


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream_dir", type=Path, help="directory holding upstream's unpacked stable_audio_tools/")
    parser.add_argument("--version", required=True, help="upstream release the source is from, e.g. 0.0.19")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent.parent / "tests" / "fixtures" /
                        "upstream_public_names.json")
    args = parser.parse_args(argv)
    surface = collect(args.upstream_dir)
    fixture = {
        "upstream": f"stable-audio-tools {args.version}",
        "generator": "scripts/gen_upstream_names.py",
        "rules": "public top-level classes and functions of every module; package __init__ files also list the "
                 "names they import (star imports expanded to the source module's classes and functions); "
                 "top-level assignments are not counted",
        "module_count": len(surface),
        "name_count": sum(len(v) for v in surface.values()),
        "modules": surface,
    }
    args.output.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {fixture['module_count']} modules, {fixture['name_count']} names", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
