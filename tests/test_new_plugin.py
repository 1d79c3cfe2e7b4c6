"""`flux new-plugin NAME --kind KIND` writes a package that installs and whose own tests pass as written.

The unit tests generate each kind in-process. Two slow tests run the generated packages' tests: beside the
checkout, uninstalled (the model-free ones that need no entry point), and installed as wheels into one fresh venv
beside the built core wheel (every test; `flux plugins` lists all four kinds there).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
from wheels import built_distributions, fresh_venv_with, offline_env, plugin_source_copy, run, wheel_of

import flux_core
from flux_core.cli import main
from flux_core.new_plugin import KINDS, new_plugin

# kind -> (a name for it, the hook its plugin module implements)
GENERATED = {
    "algorithm": ("toy_sft", "register_algorithms"),
    "loss": ("margin_loss", "register_losses"),
    "reward": ("word_count", "register_rewards"),
    "reference": ("flat_reference", "reference_policy"),
}


def generate_all(parent: Path) -> list[Path]:
    return [new_plugin(name, kind, parent / f"flux-{name.replace('_', '-')}") for kind, (name, _) in GENERATED.items()]


def file_texts(directory: Path) -> dict[str, str]:
    """Every file ``flux new-plugin`` wrote under ``directory`` (not the bytecode its tests' runs leave)."""
    files = (path for path in directory.rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    return {path.relative_to(directory).as_posix(): path.read_text() for path in files}


def pytest_summary(output: str) -> dict[str, int]:
    """``{"passed": 9, ...}`` from pytest's last line."""
    return {
        word: int(count) for count, word in re.findall(r"(\d+) (passed|failed|error|errors|skipped|deselected)", output)
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_a_complete_package_of_its_hook(tmp_path, kind):
    name, hook = GENERATED[kind]
    target = new_plugin(name, kind, tmp_path / "pkg")
    package = f"flux_{name}"

    files = {path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file()}
    assert {
        "pyproject.toml",
        "README.md",
        f"{package}/__init__.py",
        f"{package}/plugin.py",
        f"tests/test_{name}.py",
    } <= files
    if kind == "algorithm":
        assert {f"{package}/config.py", f"{package}/runner.py", f"{package}/trl_reliance.py"} <= files
    pyproject = (target / "pyproject.toml").read_text()
    assert f'[project.entry-points.flux]\n{name} = "{package}.plugin"' in pyproject
    assert f'"flux-train>={flux_core.__version__}"' in pyproject
    for path in target.rglob("*"):
        if path.is_file():
            assert "$" not in path.read_text(), f"{path}: a placeholder was left unfilled"
    plugin = ast.parse((target / package / "plugin.py").read_text())
    hooks = [node.name for node in plugin.body if isinstance(node, ast.FunctionDef) and node.decorator_list]
    assert hooks == [hook]
    # Plugins import core only through flux_core's public names (the plugin API).
    for path in target.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flux_core"):
                if node.module == "flux_core":
                    assert {alias.name for alias in node.names} <= set(flux_core.__all__), path
                else:
                    assert node.module == "flux_core.testing", f"{path} imports {node.module}"


def test_the_command_says_what_to_run_next(tmp_path, capsys):
    assert main(["new-plugin", "my_loss", "--kind", "loss", "--directory", str(tmp_path / "flux-my-loss")]) == 0
    out = capsys.readouterr().out
    assert f"wrote the loss plugin my_loss to {tmp_path / 'flux-my-loss'}" in out
    assert "pip install -e '.[test]' && pytest" in out
    assert (tmp_path / "flux-my-loss" / "flux_my_loss" / "plugin.py").is_file()
    assert oct((tmp_path / "flux-my-loss").stat().st_mode & 0o777) == oct(0o755)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["My-Loss", "--kind", "loss"], "plugin name 'My-Loss' must be a lowercase Python identifier"),
        (["class", "--kind", "loss"], "plugin name 'class' must be a lowercase Python identifier"),
        (["dpo", "--kind", "algorithm"], "plugin name 'dpo' is already taken"),
        (["fresh", "--kind", "loss", "--directory", "."], ". already exists: give another directory"),
    ],
)
def test_bad_names_and_existing_directories_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flux: error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, no half-made directory


def test_an_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["new-plugin", "x", "--kind", "metric"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'metric'" in capsys.readouterr().err


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FLUX_LOAD_PLUGINS")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


@pytest.mark.slow
def test_generated_unit_tests_pass_beside_the_checkout(tmp_path):
    packages = generate_all(tmp_path / "generated")
    tests = run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", "not flux_plugins",
        *map(str, packages),
        env=environment(PYTHONPATH=os.pathsep.join(map(str, packages))), cwd=tmp_path,
    )  # fmt: skip
    # Model-free, and needing no install: the loss's and the reward's numbers, the reference hook's switch.
    assert pytest_summary(tests.stdout) == {"passed": 3, "deselected": 8}, tests.stdout


@pytest.mark.slow
def test_generated_packages_pass_their_tests_in_a_fresh_venv_beside_the_core_wheel(
    tmp_path_factory, worker_id, tmp_path
):
    packages = generate_all(tmp_path / "generated")
    copies = [plugin_source_copy(package, tmp_path / "build") for package in packages]  # pip builds in the tree
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", str(tmp_path / "wheels"), *map(str, copies),
    )  # fmt: skip
    dist = built_distributions(tmp_path_factory, worker_id)
    core = [wheel_of(dist, name) for name in ("flux-train", "flux-dpo", "flux-grpo")]  # what loss/reward/reference need
    bin_dir, site = fresh_venv_with([*core, *sorted((tmp_path / "wheels").glob("*.whl"))], tmp_path)
    env = offline_env(tmp_path)

    # The core wheel carries the templates: rendered from it, they are the packages under test. (Not through
    # `flux new-plugin`, which refuses the names: the packages are installed here.)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import flux_core.new_plugin as new_plugin

        assert new_plugin.__file__.startswith({str(site)!r}), new_plugin.__file__
        for kind, (name, _) in {GENERATED!r}.items():
            new_plugin.render_package(kind, new_plugin.template_values(name, kind), Path("from-wheel", name))
        """
    )
    run(str(bin_dir / "python"), "-c", script, env=env, cwd=tmp_path)
    for name, _ in GENERATED.values():
        (package,) = [package for package in packages if package.name == f"flux-{name.replace('_', '-')}"]
        assert file_texts(tmp_path / "from-wheel" / name) == file_texts(package)

    listing = run(str(bin_dir / "flux"), "plugins", env=env, cwd=tmp_path).stdout
    for name, hook in GENERATED.values():
        assert f"{name} (flux-{name.replace('_', '-')} 0.1.0): {hook}" in listing, listing
    tests = run(
        str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, packages),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert pytest_summary(tests.stdout) == {"passed": 11}, tests.stdout
