"""What `make dist` publishes: an sdist and a wheel of flux-train and of every plugin that pass `twine check`,
carry their README, license, classifiers and Python requirement, and, installed as wheels (not editable)
into a fresh venv, run the DPO tutorial's code (examples/dpo_tutorial.py) on the tiny model.

Marked ``slow``: it builds two archives per distribution and a venv. The builds run without isolation
(this venv's setuptools, no download), from copies of the sources, once per session for every test that
installs a wheel (tests/wheels.py).
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from paths import REPO
from wheels import PLUGIN_DIRS, built_distributions, distribution_name, fresh_venv_with, offline_env, run

pytestmark = pytest.mark.slow


def declared_version(package_dir: Path) -> str:
    """``__version__`` as the package's ``__init__.py`` writes it: the one place a version is written."""
    for node in ast.parse((package_dir / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]:
            return node.value.value
    raise AssertionError(f"{package_dir}/__init__.py sets no __version__")


# distribution -> (source directory, import package that holds its version, the title its README starts with)
DISTRIBUTIONS = {
    "flux-train": (REPO, REPO / "flux_core", "# Flux"),
    **{distribution_name(d): (d, d / f"flux_{d.name}", f"# {distribution_name(d)}") for d in PLUGIN_DIRS},
}


@pytest.fixture(scope="module")
def dist(tmp_path_factory, worker_id) -> Path:
    """``dist/`` as `make dist` fills it (without build isolation), from copies of the sources."""
    return built_distributions(tmp_path_factory, worker_id)


def archives(dist: Path, name: str) -> tuple[Path, Path]:
    """(wheel, sdist) of distribution ``name`` at its declared version."""
    _, package_dir, _ = DISTRIBUTIONS[name]
    stem = f"{name.replace('-', '_')}-{declared_version(package_dir)}"
    return dist / f"{stem}-py3-none-any.whl", dist / f"{stem}.tar.gz"


def test_every_distribution_is_built_and_passes_twine_check(dist):
    built = sorted(path.name for path in dist.iterdir())
    expected = sorted(path.name for name in DISTRIBUTIONS for path in archives(dist, name))
    assert built == expected
    check = run(sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir())))
    assert check.stdout.count("PASSED") == len(expected), check.stdout


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_each_archive_carries_its_readme_license_classifiers_and_python_requirement(dist, name):
    source, package_dir, title = DISTRIBUTIONS[name]
    wheel, sdist = archives(dist, name)
    with zipfile.ZipFile(wheel) as archive:
        info = f"{wheel.name.split('-py3')[0]}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        wheel_license = archive.read(f"{info}/licenses/LICENSE").decode()
    headers, _, description = metadata.partition("\n\n")
    assert f"\nVersion: {declared_version(package_dir)}\n" in headers
    assert "\nLicense-Expression: Apache-2.0\n" in headers and "\nLicense-File: LICENSE\n" in headers
    assert "\nRequires-Python: >=3.10\n" in headers
    assert "\nClassifier: Programming Language :: Python :: 3 :: Only\n" in headers
    assert "\nDescription-Content-Type: text/markdown\n" in headers
    assert description.startswith(title + "\n")  # its own README is its PyPI page
    assert wheel_license == (REPO / "LICENSE").read_text()
    assert (source / "LICENSE").read_text() == (REPO / "LICENSE").read_text()  # a plugin's copy never drifts
    if name != "flux-train":
        assert re.search(r"\nRequires-Dist: flux-train>=\d", headers), headers
        assert re.search(r"\nRequires-Dist: trl<2,>=1\.16\n", headers), headers
    with tarfile.open(sdist) as archive:
        members = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= members
    assert not any(member.startswith("tests/") for member in members)  # the tests need the whole repository


def test_the_wheels_install_into_a_fresh_venv_and_run_the_tutorial(dist, tmp_path):
    wheels = sorted(dist.glob("*.whl"))
    bin_dir, site = fresh_venv_with(wheels, tmp_path)
    env = offline_env(tmp_path)

    version = run(str(bin_dir / "flux"), "--version", env=env, cwd=tmp_path)
    assert version.stderr == ""
    for name, (_, package_dir, _) in DISTRIBUTIONS.items():
        assert f"{name} {declared_version(package_dir)}" in version.stdout
    where = run(
        str(bin_dir / "python"), "-c", "import flux, flux_core, flux_dpo; print(flux.__file__, flux_dpo.__file__)",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert all(path.startswith(str(site)) for path in where.stdout.split()), where.stdout  # the wheels, no checkout

    # As `make demo` runs it: synthetic pairs, the demo config (here 8 steps), the tutorial's code in its directory.
    work = tmp_path / "tutorial"
    work.mkdir()
    run(str(bin_dir / "flux"), "tiny-model", str(tmp_path / "model"), env=env, cwd=work)
    python = str(bin_dir / "python")
    run(python, str(REPO / "examples" / "make_preferences.py"), "preferences.jsonl", "--pairs", "32", env=env, cwd=work)
    config = (REPO / "configs" / "dpo-demo.yaml").read_text()
    config = config.replace("model_path: .cache/tiny-model", f"model_path: {tmp_path / 'model'}")
    config = config.replace("num_steps: 60", "num_steps: 8").replace("save_steps: 20", "save_steps: 4")
    (work / "dpo-config.yaml").write_text(config)
    shutil.copy(REPO / "examples" / "dpo_tutorial.py", work)
    tutorial = run(python, "dpo_tutorial.py", env=env, cwd=work)
    out = tutorial.stdout
    assert "Step 1: loss=0.6931" in out and "Step 8: loss=" in out, out
    assert "Training complete!" in out and "Trained model: " in out, out
    assert (work / "outputs" / "dpo" / "best" / "model.safetensors").is_file()
