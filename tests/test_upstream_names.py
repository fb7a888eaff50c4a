"""Upstream's import surface: every module path and public name of stable-audio-tools 0.0.19 resolves here.

The list is ``fixtures/upstream_public_names.json``, generated once from upstream's source by
``scripts/gen_upstream_names.py`` (see its docstring for what counts as a public name). Forks and user scripts
import these paths, so every single entry must resolve.
"""
import importlib
import json

import pytest

from conftest import FIXTURES, ROOT

FIXTURE = json.loads((FIXTURES / "upstream_public_names.json").read_text(encoding="utf-8"))
MODULES = FIXTURE["modules"]
NAMES = [(module, name) for module, names in MODULES.items() for name in names]


def test_fixture_is_complete():
    """The fixture keeps the size it was generated with (no silent shrinking of the list)."""
    assert FIXTURE["upstream"] == "stable-audio-tools 0.0.19"
    assert len(MODULES) == FIXTURE["module_count"] == 51
    assert len(NAMES) == FIXTURE["name_count"] == 400
    assert len(set(NAMES)) == len(NAMES)


def test_generator_reproduces_fixture_rules(tmp_path):
    """The documented generator applies its rules: classes/functions, __init__ imports, star imports expanded."""
    import subprocess
    import sys

    pkg = tmp_path / "stable_audio_tools"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .mod import public_fn, Klass as Alias\n")
    (pkg / "mod.py").write_text("X = 1\n_hidden = 2\ndef public_fn():\n    pass\ndef _private():\n    pass\n"
                                "class Klass:\n    def method(self):\n        pass\nasync def coro():\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("from .inner import *\n")
    (pkg / "sub" / "inner.py").write_text("import os\ndef helper():\n    pass\nclass Thing:\n    pass\n"
                                          "def helper():\n    pass\n")
    out = tmp_path / "names.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_upstream_names.py"), str(tmp_path),
                    "--version", "9.9", "--output", str(out)], check=True, capture_output=True)
    generated = json.loads(out.read_text())
    assert generated["modules"] == {
        "stable_audio_tools": ["public_fn", "Alias"],
        "stable_audio_tools.mod": ["public_fn", "Klass", "coro"],
        "stable_audio_tools.sub": ["helper", "Thing"],
        "stable_audio_tools.sub.inner": ["helper", "Thing"],
    }
    assert generated["name_count"] == 9


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("module,name", NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_name_resolves(module, name):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} does not resolve (upstream 0.0.19 defines it there)"
