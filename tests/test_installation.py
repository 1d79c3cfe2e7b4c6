"""What is installed: `flux --version`, versions written once per distribution, and another distribution's
`flux` package (PyPI's unrelated flux-core ships one) named in one line with what to do."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

import flux_core
from flux_core.installation import DISTRIBUTION, flux_package_problem, mixed_flux_package_problem

FLUX = str(Path(sys.executable).with_name("flux"))
PLUGIN_DIRS = sorted(path for path in (REPO / "flux_plugins").iterdir() if (path / "pyproject.toml").is_file())
# The stranger: flux-core 0.87.5 from PyPI (a workflow engine) ships these under a top-level `flux`.
STRANGER_FILES = ("flux/__init__.py", "flux/cli.py", "flux/_namespace.py", "flux/agents/__init__.py")


def install_stranger(site: Path, flux_init: str = "STRANGER = True\n") -> Path:
    """PyPI's flux-core 0.87.5 as its wheel lays it out in ``site`` (its dist-info names no top_level.txt)."""
    for name in STRANGER_FILES:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(flux_init if name == "flux/__init__.py" else "")
    info = site / "flux_core-0.87.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flux-core\nVersion: 0.87.5\n")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in STRANGER_FILES) + f"{info.name}/METADATA,,\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nflux = flux.cli:cli\n")
    return site


def declared_version(package_dir: Path) -> str:
    for node in ast.parse((package_dir / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]:
            return node.value.value
    raise AssertionError(f"{package_dir}/__init__.py sets no __version__")


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize("source", [REPO, *PLUGIN_DIRS], ids=lambda path: path.name if path != REPO else "core")
def test_each_distribution_writes_its_version_once_in_its_package(source):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((source / "pyproject.toml").read_text())
    package = "flux_core" if source == REPO else f"flux_{source.name}"
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": f"{package}.__version__"}
    # ... and what is installed says the same (make install put it there from that one place)
    assert importlib.metadata.version(project["project"]["name"]) == declared_version(source / package)


def test_the_core_is_flux_train_and_every_plugin_depends_on_it():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"] == DISTRIBUTION == "flux-train"
    for source in [*PLUGIN_DIRS, *sorted((REPO / "examples").glob("flux-example-*"))]:
        dependencies = tomllib.loads((source / "pyproject.toml").read_text())["project"]["dependencies"]
        assert [d for d in dependencies if d.startswith("flux-")] in (["flux-train"], ["flux-train>=0.1.0"]), source


def test_flux_version_prints_core_every_plugin_and_trl():
    result = subprocess.run([FLUX, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"flux-train {flux_core.__version__} (plugin API 1, Python ")
    for plugin in PLUGIN_DIRS:
        version = declared_version(plugin / f"flux_{plugin.name}")
        distribution = f"flux-{plugin.name.replace('_', '-')}"  # flux_plugins/online_dpo: flux-online-dpo
        assert f"  {distribution} {version} ({plugin.name})" in lines, result.stdout
    assert lines[-1] == f"trl {importlib.metadata.version('trl')} (tested: trl>=1.16,<1.17)"


def test_flux_version_imports_neither_torch_nor_trl():
    code = (
        "import sys\nfrom flux_core.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'trl' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.strip() == "False False"


# ------------------------------------------------------------------ another distribution's `flux`


def test_this_install_has_flux_to_itself():
    assert flux_package_problem() is None


def test_another_flux_first_on_sys_path_is_named_with_what_to_do(tmp_path, monkeypatch):
    site = install_stranger(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    assert flux_package_problem() == (
        f"`import flux` loads flux-core 0.87.5's flux package ({site / 'flux'}), not Flux's (flux-train): "
        "pip uninstall flux-core"
    )


def test_another_distributions_files_inside_fluxs_flux_package_are_named(tmp_path):
    # Both wheels installed into one site-packages: the later one's flux/__init__.py wins, the rest mixes.
    site = install_stranger(tmp_path / "site", flux_init=(REPO / "flux" / "__init__.py").read_text())
    assert mixed_flux_package_problem(site / "flux") == (
        f"flux-core 0.87.5 installed its own flux package over Flux's ({site / 'flux'}: _namespace.py, agents, "
        "cli.py): pip uninstall flux-core, then pip install --force-reinstall --no-deps flux-train"
    )


def test_the_cli_warns_in_one_line_and_still_works(tmp_path):
    site = install_stranger(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([FLUX, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"flux: warning: `import flux` loads flux-core 0.87.5's flux package ({site / 'flux'}), not Flux's "
        "(flux-train): pip uninstall flux-core"
    ]
    assert result.stdout.startswith("flux-train ")


def test_import_flux_warns_when_another_distribution_mixed_its_files_in(tmp_path):
    site = install_stranger(tmp_path / "site", flux_init=(REPO / "flux" / "__init__.py").read_text())
    code = "import warnings; warnings.simplefilter('error')\nimport flux"
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = dict(capture_output=True, text=True, timeout=60, cwd=tmp_path)  # not the checkout: its flux/ would come first
    result = subprocess.run([sys.executable, "-c", code], env=env, **run)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"UserWarning: flux-core 0.87.5 installed its own flux package over Flux's ({site / 'flux'}: _namespace.py, "
        "agents, cli.py): pip uninstall flux-core, then pip install --force-reinstall --no-deps flux-train"
    )
    clean = subprocess.run([sys.executable, "-W", "error", "-c", "import flux"], **run)
    assert clean.returncode == 0, clean.stderr  # Flux's own flux package alone: not a word


def test_importing_flux_reads_no_package_metadata(monkeypatch):
    # The check on every `import flux` looks at one directory; metadata is read only once something is wrong.
    import flux

    def refuse(*args, **kwargs):
        raise AssertionError("metadata read on a clean import")

    monkeypatch.setattr(importlib.metadata, "distributions", refuse)
    monkeypatch.setattr(importlib.metadata, "packages_distributions", refuse)
    importlib.reload(flux)
