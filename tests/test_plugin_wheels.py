"""Each plugin is its own distribution: wheels of flux-train and one plugin (flux-sft, flux-rm, flux-kto),
installed alone into a fresh venv (no other Flux package), list and train.

Building wheels and a venv is slow next to the rest of the suite, so this is marked ``slow``; the
heavy dependencies (torch, transformers, TRL) are not reinstalled (see tests/wheels.py).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from paths import REPO
from wheels import build_wheel, core_source_copy, fresh_venv_with, offline_env, plugin_source_copy, run, wheel_metadata

# plugin directory -> (algorithm.name, a few training rows in its data format)
PLUGINS = {
    "sft": ("sft", [{"prompt": f"Count to {n}.", "completion": " 1 2 3."} for n in range(8)]),
    "rm": ("reward_model", [{"prompt": f"Q{n}:", "chosen": " a fine answer.", "rejected": " no."} for n in range(8)]),
    "kto": ("kto", [{"prompt": f"Q{n}:", "completion": " fine.", "label": n % 2 == 0} for n in range(8)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_core_and_one_plugin_install_alone_and_train(tmp_path, plugin):
    algorithm, rows = PLUGINS[plugin]
    dist = tmp_path / "dist"
    dist.mkdir()
    sources = [core_source_copy(tmp_path / "src"), plugin_source_copy(REPO / "flux_plugins" / plugin, tmp_path / "src")]
    wheels = [build_wheel(source, dist) for source in sources]
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
