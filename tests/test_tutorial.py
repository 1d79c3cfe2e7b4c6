"""Every code block of the DPO tutorial runs verbatim (only model_path changed).

The tutorial's text is docs/dpo-tutorial.txt, as published (its indentation was lost); its code is
the blocks below, re-indented (examples/dpo_tutorial.py is the same code as `make demo` runs it), and
the first test proves each of their lines is a line of the tutorial, in order.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "dpo-tutorial.txt"

DATA_BLOCK = """
import json
# Preference pairs
preferences = [
    {
        "prompt": "Explain quantum computing.",
        "chosen": "Quantum computing uses quantum bits (qubits) that can exist in multiple states simultaneously, unlike classical bits which are either 0 or 1. This allows quantum computers to solve certain problems much faster.",
        "rejected": "Quantum computing is complicated. It uses quantum stuff to compute things faster. I don't really understand it myself."
    },
    {
        "prompt": "Write a professional email.",
        "chosen": "Dear Mr. Smith,\\n\\nThank you for your inquiry. I would be happy to schedule a meeting at your earliest convenience.\\n\\nBest regards,\\nJohn",
        "rejected": "hey john whats up, yeah we can meet whenever lol"
    },
    # Add more pairs...
]
# Save to JSONL
with open("preferences.jsonl", "w") as f:
    for p in preferences:
        f.write(json.dumps(p) + "\\n")
print(f"Created {len(preferences)} preference pairs")
"""

YAML_BLOCK = """
model_path: Qwen/Qwen3-8B
output_dir: ./outputs/dpo
sglang:
  base_url: http://localhost:8000
# Training settings
num_steps: 1000
batch_size: 8
learning_rate: 5.0e-7 # Lower LR for DPO
# DPO algorithm
algorithm:
  name: dpo
  beta: 0.1 # Temperature parameter
  reference_free: false # Use reference model
  label_smoothing: 0.0 # Optional smoothing
# DPO doesn't need async (no rollouts)
adaptive_async:
  enabled: false
checkpoint:
  save_steps: 200
"""

TRAIN_BLOCK = """
from flux import FluxConfig, FluxTrainer
# Load config
config = FluxConfig.from_yaml("dpo-config.yaml")
# Create trainer
trainer = FluxTrainer(config)
"""

MONITOR_BLOCK = """
@trainer.add_step_callback
def log_dpo_metrics(result):
    metrics = result.metrics
    print(f"Step {result.step}: "
          f"loss={metrics['loss']:.4f}, "
          f"chosen_reward={metrics.get('chosen_reward', 0):.3f}, "
          f"rejected_reward={metrics.get('rejected_reward', 0):.3f}, "
          f"reward_margin={metrics.get('reward_margin', 0):.3f}")
"""

FIT_BLOCK = """
# Train with preference data
result = trainer.fit(
    prompts="preferences.jsonl",
    data_format="preferences", # Indicates DPO format
)
print(f"Training complete!")
print(f"Final loss: {result.final_loss:.4f}")
"""

EVAL_BLOCK = """
from flux import FluxTrainer
trainer = FluxTrainer(config)
trainer.load_checkpoint("outputs/dpo/best")
# Test prompts
test_prompt = "Explain machine learning."
# Generate response
response = trainer.generate(test_prompt)
print(f"Trained model: {response}")
"""

BLOCKS = [DATA_BLOCK, YAML_BLOCK, TRAIN_BLOCK + FIT_BLOCK, MONITOR_BLOCK, EVAL_BLOCK]


def test_blocks_are_the_tutorials_own_lines_in_order():
    lines = [line.strip() for line in TUTORIAL.read_text().splitlines()]
    for block in BLOCKS:
        position = 0
        for line in (line.strip() for line in block.strip().splitlines()):
            if not line:
                continue
            assert line in lines[position:], f"not in the tutorial (in order): {line!r}"
            position = lines.index(line, position) + 1


def test_tutorial_runs_verbatim_against_a_local_model(tmp_path, tiny_model_dir):
    yaml_text = YAML_BLOCK.replace("model_path: Qwen/Qwen3-8B", f"model_path: {tiny_model_dir}")
    (tmp_path / "dpo-config.yaml").write_text(yaml_text)
    # As a reader runs it: the data block, then the monitoring callback registered before fit, then evaluation.
    script = DATA_BLOCK + TRAIN_BLOCK + MONITOR_BLOCK + FIT_BLOCK + EVAL_BLOCK
    (tmp_path / "tutorial.py").write_text(textwrap.dedent(script))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "tutorial.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Created 2 preference pairs" in out
    assert "Step 1: loss=0.6931" in out and "Step 1000: loss=" in out
    assert "Training complete!" in out and "Final loss: " in out
    assert "Trained model: " in out
    for step in (200, 400, 600, 800, 1000):
        assert (tmp_path / "outputs" / "dpo" / f"checkpoint-{step}" / "model.safetensors").exists()
    assert (tmp_path / "outputs" / "dpo" / "best" / "config.json").exists()
