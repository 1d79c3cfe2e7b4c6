"""The plugin API: what ``flux_core.__all__`` promises plugin authors."""

import importlib
import subprocess
import sys

import pytest
from paths import REPO

import flux_core


@pytest.mark.parametrize("name", flux_core.__all__)
def test_every_plugin_api_name_resolves_to_its_defining_object(name):
    value = getattr(flux_core, name)
    module = flux_core._PLUGIN_API.get(name)
    if module is not None:  # a lazy name: the very object its module defines, not a copy
        assert value is getattr(importlib.import_module(module), name)
    assert name in dir(flux_core)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'TrainerOfDoom'"):
        flux_core.TrainerOfDoom  # noqa: B018


def test_importing_the_plugin_api_does_not_import_torch_or_trl():
    # A plugin module imports flux_core names at the top; `flux plugins` must stay fast.
    code = (
        "import sys\n"
        "from flux_core import Algorithm, AlgorithmConfig, TRLRunner, build_trl_config, hookimpl, RolloutBackend\n"
        "print('torch' in sys.modules, 'trl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_bundled_plugins_import_only_the_plugin_api_from_core_modules_they_need():
    # Every name the KTO plugin (the worked example in docs/plugins.md) takes from core is public API.
    import ast

    root = REPO / "flux_plugins" / "kto" / "flux_kto"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flux_core"):
                assert node.module == "flux_core", f"{path.name} imports from {node.module}"
                assert all(alias.name in flux_core.__all__ for alias in node.names)
