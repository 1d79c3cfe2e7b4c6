"""The plugin API: what ``flux_core.__all__`` promises plugin authors, and its version."""

import importlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------ the plugin API's version


def test_the_bundled_and_example_plugins_declare_the_plugin_api_they_are_written_for():
    from flux_core.plugins import PLUGIN_API_ATTRIBUTE, PLUGIN_API_VERSION

    modules = [f"flux_{path.parent.name}.plugin" for path in sorted(REPO.glob("flux_plugins/*/pyproject.toml"))]
    assert len(modules) >= 6  # dpo, grpo, ppo, sft, rm, kto and the plugins added since
    for module in modules:
        assert getattr(importlib.import_module(module), PLUGIN_API_ATTRIBUTE) == PLUGIN_API_VERSION, module
    for example in sorted(REPO.glob("examples/flux-example-*/flux_example_*/__init__.py")):
        assert f'\n{PLUGIN_API_ATTRIBUTE} = "{PLUGIN_API_VERSION}"\n' in example.read_text(), example


def test_a_plugin_written_for_another_plugin_api_is_refused_naming_both_versions():
    from types import SimpleNamespace

    from flux_core.plugins import plugin_api_problem

    entry_point = importlib.metadata.EntryPoint(name="future", value="flux_future", group="flux")
    assert plugin_api_problem(SimpleNamespace(FLUX_PLUGIN_API="1"), entry_point) is None
    assert plugin_api_problem(SimpleNamespace(), entry_point) is None  # declares nothing: the API before versions
    assert plugin_api_problem(SimpleNamespace(FLUX_PLUGIN_API="2"), entry_point) == (
        f"plugin 'future' is written for Flux plugin API 2, but flux-train {flux_core.__version__} speaks plugin "
        "API 1: install a flux-train for plugin API 2, or a release of the plugin for plugin API 1"
    )


def test_flux_plugins_skips_an_incompatible_plugin_in_one_line_and_lists_it(tmp_path):
    site = tmp_path / "site"
    info = site / "flux_future-3.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flux-future\nVersion: 3.0\n")
    (info / "entry_points.txt").write_text("[flux]\nfuture = flux_future\n")
    (site / "flux_future.py").write_text('FLUX_PLUGIN_API = "2"\n')
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("flux")), "plugins"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0
    problem = (
        f"flux-future 3.0 is written for Flux plugin API 2, but flux-train {flux_core.__version__} speaks plugin API "
        "1: install a flux-train for plugin API 2, or a release of flux-future for plugin API 1"
    )
    assert result.stderr.splitlines() == [
        f"flux: warning: plugin 'future' (flux-future) is incompatible and was skipped: {problem}"
    ]
    assert f"  future (flux-future): FAILED TO LOAD: {problem}" in result.stdout.splitlines()
    assert "dpo (flux-dpo " in result.stdout  # the others load


def test_an_algorithm_whose_plugin_was_skipped_says_why_not_to_install_it():
    from flux_core import FluxError
    from flux_core.plugins import PluginFailure, failed_plugins
    from flux_core.registry import Registry

    failed_plugins.append(PluginFailure("dpo", "flux-dpo", "flux-dpo 9.0 is written for Flux plugin API 2, ..."))
    try:
        with pytest.raises(FluxError) as error:
            Registry().get_algorithm("dpo")
    finally:
        failed_plugins.pop()
    assert str(error.value) == (
        "algorithm 'dpo': its plugin (flux-dpo) was skipped: flux-dpo 9.0 is written for Flux plugin API 2, ..."
    )
