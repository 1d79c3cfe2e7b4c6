"""The DPO tutorial's code blocks, verbatim, in the order a script runs them.

`make demo` runs this in examples/ after writing preferences.jsonl (256 synthetic
pairs, examples/make_preferences.py) and copying configs/dpo-demo.yaml to
dpo-config.yaml. The tutorial's data-preparation block (two hand-written pairs) is
run verbatim by tests/test_tutorial.py instead, since the demo needs more pairs.
"""

# --- "Running DPO Training" (first half) -------------------------------------
from flux import FluxConfig, FluxTrainer

# Load config
config = FluxConfig.from_yaml("dpo-config.yaml")

# Create trainer
trainer = FluxTrainer(config)


# --- "Monitoring DPO Training" -----------------------------------------------
@trainer.add_step_callback
def log_dpo_metrics(result):
    metrics = result.metrics
    print(f"Step {result.step}: "
          f"loss={metrics['loss']:.4f}, "
          f"chosen_reward={metrics.get('chosen_reward', 0):.3f}, "
          f"rejected_reward={metrics.get('rejected_reward', 0):.3f}, "
          f"reward_margin={metrics.get('reward_margin', 0):.3f}")


# --- "Running DPO Training" (second half) ------------------------------------
# Train with preference data
result = trainer.fit(
    prompts="preferences.jsonl",
    data_format="preferences",  # Indicates DPO format
)

print(f"Training complete!")
print(f"Final loss: {result.final_loss:.4f}")

# --- "Evaluation" --------------------------------------------------------------
from flux import FluxTrainer

trainer = FluxTrainer(config)
trainer.load_checkpoint("outputs/dpo/best")

# Test prompts
test_prompt = "Explain machine learning."

# Generate response
response = trainer.generate(test_prompt)
print(f"Trained model: {response}")
