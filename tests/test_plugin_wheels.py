"""Each plugin is its own distribution: wheels of flux-core and one plugin (flux-sft, flux-rm, flux-kto),
installed alone into a fresh venv (no other Flux package), list and train.

Building wheels and a venv is slow next to the rest of the suite, so this is marked ``slow``; the
heavy dependencies (torch, transformers, TRL) are not reinstalled: the fresh venv sees the test
venv's packages through a ``.pth`` file pointing at a directory of links to them, with every Flux
package left out (the editable installs of the checkout would otherwise be found too).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from paths import REPO

# plugin directory -> (algorithm.name, a few training rows in its data format)
PLUGINS = {
    "sft": ("sft", [{"prompt": f"Count to {n}.", "completion": " 1 2 3."} for n in range(8)]),
    "rm": ("reward_model", [{"prompt": f"Q{n}:", "chosen": " a fine answer.", "rejected": " no."} for n in range(8)]),
    "kto": ("kto", [{"prompt": f"Q{n}:", "completion": " fine.", "label": n % 2 == 0} for n in range(8)]),
}


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    process = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, **kwargs)
    assert process.returncode == 0, f"{' '.join(map(str, argv))}:\n{process.stdout}\n{process.stderr}"
    return process


def is_flux_entry(name: str) -> bool:
    """Whether a site-packages entry belongs to a Flux distribution (flux-core, flux-*, their editable hooks)."""
    lowered = name.lower().replace("-", "_")
    return lowered.startswith(("flux", "__editable__.flux", "__editable___flux")) or lowered == "flux"


def build_wheel(source: Path, scratch: Path, dist: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of ``source`` (the checkout keeps no build/ or egg-info)."""
    copy = scratch / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", ".venv*"))
    before = set(dist.glob("*.whl"))
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", str(dist), str(copy),
    )  # fmt: skip
    (wheel,) = set(dist.glob("*.whl")) - before
    return wheel


def wheel_metadata(wheel: Path) -> str:
    """The ``METADATA`` file of ``wheel``: what PyPI shows, the long description included."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


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


@pytest.mark.slow
@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_core_and_one_plugin_install_alone_and_train(tmp_path, plugin):
    algorithm, rows = PLUGINS[plugin]
    dist = tmp_path / "dist"
    dist.mkdir()
    sources = tmp_path / "src"
    sources.mkdir()
    core_source = sources / "flux-core"
    core_source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, core_source / name)
    for package in ("flux", "flux_core"):
        shutil.copytree(REPO / package, core_source / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = [build_wheel(core_source, tmp_path, dist), build_wheel(REPO / "flux_plugins" / plugin, tmp_path, dist)]
    assert [wheel.name.split("-")[0] for wheel in wheels] == ["flux_core", f"flux_{plugin}"]
    # The plugin's README.md is its PyPI page (pyproject: readme = "README.md").
    metadata = wheel_metadata(wheels[1])
    assert "Description-Content-Type: text/markdown" in metadata
    assert f"# flux-{plugin}" in metadata

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
        *map(str, wheels),
    )  # fmt: skip
    new_site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (new_site / "zz_flux_test_heavy_dependencies.pth").write_text(str(heavy_dependencies_view(tmp_path / "deps")))

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FLUX_LOAD_PLUGINS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets-cache")
    listing = run(str(venv / "bin" / "flux"), "plugins", env=env, cwd=tmp_path).stdout
    plugins = listing.split("Algorithms:")[0]
    assert f"{plugin} (flux-{plugin} 0.1.0): register_algorithms" in plugins
    others = {"flux-dpo", "flux-grpo", "flux-ppo", "flux-kto", "flux-rm", "flux-sft"} - {f"flux-{plugin}"}
    assert not any(other in plugins for other in others), plugins

    script = textwrap.dedent(
        f"""
        import json, sys
        import flux_core, flux_{plugin}
        from flux_core.testing import build_tiny_model
        from flux import FluxConfig, FluxTrainer

        assert flux_core.__file__.startswith({str(new_site)!r}), flux_core.__file__  # the wheel, not the checkout
        model = build_tiny_model({str(tmp_path / "model")!r})
        config = FluxConfig.from_dict(dict(
            model_path=str(model), output_dir={str(tmp_path / "out")!r}, num_steps=2, batch_size=4,
            learning_rate=1e-3, max_length=64, algorithm={{"name": "{algorithm}"}},
        ))
        rows = {rows!r}
        result = FluxTrainer(config, show_progress=False).fit(prompts=rows)
        print(json.dumps({{"losses": result.metric("loss"), "final": result.final_path}}))
        """
    )
    output = run(str(python), "-c", script, env=env, cwd=tmp_path).stdout
    trained = json.loads(output.strip().splitlines()[-1])
    assert len(trained["losses"]) == 2 and all(math.isfinite(loss) for loss in trained["losses"])
    assert (Path(trained["final"]) / "model.safetensors").is_file()
