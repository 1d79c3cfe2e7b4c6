"""An example Flux plugin that adds one reward: ``mentions_column``.

It scores 1.0 when a completion mentions the value of a dataset column (by default
``topic``), else 0.0: the dataset column arrives as a keyword argument, and the
keyword-only parameters are the reward's settings. Enable it in YAML::

    algorithm:
      name: grpo
      rewards:
        - name: mentions_column
          kwargs: {column: topic, case_sensitive: false}
"""

from flux_core import hookimpl

# The Flux plugin API this plugin is written for (docs/plugins.md, "Versions").
FLUX_PLUGIN_API = "1"


def mentions_column(prompts, completions, *, column="topic", case_sensitive=False, **columns):
    """1.0 when the completion contains the example's ``column`` value, else 0.0."""
    values = columns[column]
    scores = []
    for completion, value in zip(completions, values):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        if not case_sensitive:
            text, value = text.lower(), str(value).lower()
        scores.append(float(str(value) in text))
    return scores


@hookimpl
def register_rewards(register):
    register("mentions_column", mentions_column)
