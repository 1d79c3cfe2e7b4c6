"""Building Flux's distributions from copies and installing them into a fresh venv, for the tests that
check what users install (test_plugin_wheels.py, test_dist.py).

Every distribution is built once per test session (:func:`built_distributions`): the ``-n`` workers
share one ``dist/`` under a file lock, so a test that needs a wheel never waits for a second build.

The heavy dependencies (torch, transformers, TRL) are not reinstalled: the fresh venv sees the test
venv's packages through a ``.pth`` file pointing at a directory of links to them, with every Flux
package left out (the editable installs of the checkout would otherwise be found too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from paths import REPO

# What the core's distribution is built from (its sdist holds these and nothing else).
CORE_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "flux", "flux_core")
PLUGIN_DIRS = sorted(path for path in (REPO / "flux_plugins").iterdir() if (path / "pyproject.toml").is_file())
# Build leftovers that must not travel into a copy (a stale build/lib would put deleted modules into a wheel).
BUILD_LEFTOVERS = shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__", ".venv*", "tests")


def distribution_name(source: Path) -> str:
    """The distribution name ``source/pyproject.toml`` declares (``flux-online-dpo`` for flux_plugins/online_dpo)."""
    import tomllib

    return tomllib.loads((source / "pyproject.toml").read_text())["project"]["name"]


def built_distributions(tmp_path_factory, worker_id: str) -> Path:
    """``dist/`` as `make dist` fills it (an sdist and a wheel of flux-train and of every plugin, built
    without isolation from copies of the sources), built by the first worker that asks and shared by all."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # xdist: every worker's basetemp has this parent
    dist, done = shared / "flux-dist", shared / "flux-dist.complete"
    with FileLock(str(shared / "flux-dist.lock")):
        if not done.exists():
            shutil.rmtree(dist, ignore_errors=True)
            scratch = shared / "flux-dist-src"
            shutil.rmtree(scratch, ignore_errors=True)
            sources = [core_source_copy(scratch)] + [plugin_source_copy(d, scratch) for d in PLUGIN_DIRS]
            for source in sources:
                run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source))
            done.touch()
    return dist


def wheel_of(dist: Path, distribution: str) -> Path:
    """The wheel of ``distribution`` (``flux-train``, ``flux-kto``) in ``dist``."""
    (wheel,) = dist.glob(f"{distribution.replace('-', '_')}-*-py3-none-any.whl")
    return wheel


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    process = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, **kwargs)
    assert process.returncode == 0, f"{' '.join(map(str, argv))}:\n{process.stdout}\n{process.stderr}"
    return process


def core_source_copy(scratch: Path) -> Path:
    """A copy of what flux-train is built from, in ``scratch/flux-train``."""
    target = scratch / "flux-train"
    target.mkdir(parents=True)
    for name in CORE_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=BUILD_LEFTOVERS)
        else:
            shutil.copy(source, target / name)
    return target


def plugin_source_copy(plugin_dir: Path, scratch: Path) -> Path:
    """A copy of ``flux_plugins/<name>`` without build leftovers, in ``scratch/<name>``."""
    return Path(shutil.copytree(plugin_dir, scratch / plugin_dir.name, ignore=BUILD_LEFTOVERS))


def build_wheel(source: Path, dist: Path) -> Path:
    """``pip wheel --no-deps`` of ``source`` (a copy: the checkout keeps no build/ or egg-info)."""
    before = set(dist.glob("*.whl"))
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", str(dist), str(source),
    )  # fmt: skip
    (wheel,) = set(dist.glob("*.whl")) - before
    return wheel


def wheel_metadata(wheel: Path) -> str:
    """The ``METADATA`` file of ``wheel``: what PyPI shows, the long description included."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def is_flux_entry(name: str) -> bool:
    """Whether a site-packages entry belongs to a Flux distribution (flux-train, flux-*, their editable hooks)."""
    lowered = name.lower().replace("-", "_")
    return lowered.startswith(("flux", "__editable__.flux", "__editable___flux")) or lowered == "flux"


def heavy_dependencies_view(parent: Path) -> Path:
    """A directory of links to this venv's site-packages entries, Flux's own left out.

    It is named site-packages too: dill (datasets' fingerprints) pickles classes of modules outside a
    directory of that name by value, and fails on pyarrow's.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    target = parent / "site-packages"
    target.mkdir(parents=True)
    for entry in site.iterdir():
        if is_flux_entry(entry.name) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)
    return target


def fresh_venv_with(wheels: list[Path], scratch: Path) -> tuple[Path, Path]:
    """A new venv in ``scratch/venv`` with ``wheels`` installed (not editable, no dependencies) and this
    venv's other packages visible; returns its bin directory and its site-packages."""
    venv = scratch / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
        *map(str, wheels),
    )  # fmt: skip
    new_site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (new_site / "zz_flux_test_heavy_dependencies.pth").write_text(str(heavy_dependencies_view(scratch / "deps")))
    return venv / "bin", new_site


def offline_env(scratch: Path) -> dict[str, str]:
    """The environment for commands in the fresh venv: offline, one thread, no checkout on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FLUX_LOAD_PLUGINS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env["HF_DATASETS_CACHE"] = str(scratch / "datasets-cache")
    return env
