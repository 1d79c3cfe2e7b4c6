"""Each plugin is its own distribution: wheels of flux-train and one plugin (flux-kto), installed alone into a
fresh venv (no other Flux package), list and train.

Building wheels and a venv is slow next to the rest of the suite, so this is marked ``slow``; the
heavy dependencies (torch, transformers, TRL) are not reinstalled (see tests/wheels.py).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from wheels import (
    PLUGIN_DIRS,
    built_distributions,
    distribution_name,
    fresh_venv_with,
    offline_env,
    run,
    wheel_metadata,
    wheel_of,
)

# plugin directory -> (algorithm.name, a few training rows in its data format). One plugin stands for all: each
# venv costs ~20 s, every plugin is built the same way (tests/test_dist.py checks each one's archives and installs
# them all), and kto is the folder new plugins are copied from.
PLUGINS = {
    "kto": ("kto", [{"prompt": f"Q{n}:", "completion": " fine.", "label": n % 2 == 0} for n in range(8)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_core_and_one_plugin_install_alone_and_train(tmp_path_factory, worker_id, tmp_path, plugin):
    algorithm, rows = PLUGINS[plugin]
    dist = built_distributions(tmp_path_factory, worker_id)
    wheels = [wheel_of(dist, "flux-train"), wheel_of(dist, f"flux-{plugin}")]
    assert [wheel.name.split("-")[0] for wheel in wheels] == ["flux_train", f"flux_{plugin}"]
    # The plugin's README.md is its PyPI page (pyproject: readme = "README.md").
    metadata = wheel_metadata(wheels[1])
    assert "Description-Content-Type: text/markdown" in metadata
    assert f"# flux-{plugin}" in metadata

    bin_dir, new_site = fresh_venv_with(wheels, tmp_path)
    python = bin_dir / "python"
    env = offline_env(tmp_path)
    listing = run(str(bin_dir / "flux"), "plugins", env=env, cwd=tmp_path).stdout
    plugins = listing.split("Algorithms:")[0]
    assert f"{plugin} (flux-{plugin} 0.1.0): register_algorithms" in plugins
    others = {distribution_name(directory) for directory in PLUGIN_DIRS} - {f"flux-{plugin}"}
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
