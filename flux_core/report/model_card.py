"""Model cards: a ``README.md`` in every checkpoint, following Hugging Face's conventions.

YAML front matter (``base_model``, ``library_name``, ``tags``, ``datasets`` when the data
is a hub dataset, ``pipeline_tag``) that the Hub reads, then what was trained, how, the
config, the checkpoint's metrics and how to load it. ``push_to_hub`` uploads a
checkpoint, card included, through ``huggingface_hub``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from flux_core.errors import FluxError
from flux_core.modeling import sequence_classifier_class
from flux_core.run.layout import ADAPTER_DIR, CARD_FILE, CONFIG_FILE, METRICS_FILE

TAIL_BYTES = 1 << 16  # the step being saved is the last line of metrics.jsonl
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LORA_NOTE = f" (a LoRA adapter, merged into these weights; the adapter alone is in {ADAPTER_DIR}/)"


def _is_hub_id(value: str | None) -> bool:
    return bool(value) and not Path(value).exists() and bool(_HUB_ID.match(value))


def _last_metrics(output_dir: Path, step: int | None) -> dict[str, float]:
    """The metrics of ``step`` from ``output_dir/metrics.jsonl``: its last lines (read from the end)."""
    metrics_file = output_dir / METRICS_FILE
    if step is None or not metrics_file.exists():
        return {}
    with metrics_file.open("rb") as handle:
        handle.seek(max(0, metrics_file.stat().st_size - TAIL_BYTES))
        tail = handle.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(tail):
        try:
            row = json.loads(line)
        except ValueError:  # the first line of the tail may be cut
            continue
        if row.get("step") == step:
            return {key: value for key, value in row.items() if key != "step" and isinstance(value, (int, float))}
    return {}


def card_text(config: Any, meta: dict[str, Any], metrics: dict[str, float], name: str, classifier: bool = False) -> str:
    """The ``README.md`` of one checkpoint; ``classifier``: the model is a sequence classifier
    (a reward model), which gets its own pipeline tag and loading code."""
    algorithm = config.algorithm.name
    front: dict[str, Any] = {}
    if _is_hub_id(config.model_path):
        front["base_model"] = config.model_path
    front["library_name"] = "transformers"
    front["pipeline_tag"] = "text-classification" if classifier else "text-generation"
    front["tags"] = ["flux", algorithm, "trl"] + (["lora", "peft"] if config.lora else [])
    data_path = getattr(config.data, "path", None)
    if _is_hub_id(data_path):
        front["datasets"] = [data_path]
    base = (
        f"[{config.model_path}](https://huggingface.co/{config.model_path})"
        if "base_model" in front
        else (f"`{config.model_path}`")
    )
    score = meta.get("score")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{algorithm.upper()} fine-tune of {base}, trained with Flux on Hugging Face TRL"
        f"{_LORA_NOTE if config.lora else ''}.",
        "",
        f"- checkpoint: `{name}` at step {meta.get('step')} of {config.num_steps}"
        + (f"; {meta.get('score_name')} {score:.4f}" if isinstance(score, (int, float)) else ""),
        f"- data: `{data_path}`" if data_path else "- data: passed to `fit()` in Python",
        f"- batch size {config.batch_size}, learning rate {config.learning_rate}, max length {config.max_length}, "
        f"seed {config.seed}",
        "",
        "## Metrics at this step",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| `{key}` | {value:.6g} |" for key, value in sorted(metrics.items())),
        "",
        "## How to load",
        "",
        *(_classifier_loading() if classifier else _causal_lm_loading()),
        "",
        f"## Training config (`{CONFIG_FILE}`)",
        "",
        "```yaml",
        config.to_yaml().strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _causal_lm_loading() -> list[str]:
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO_ID")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_ID")',
        "```",
    ]


def _classifier_loading() -> list[str]:
    return [
        "A reward model: one score per sequence, read at its last token. In Flux, score GRPO or PPO",
        "completions with it as `rewards: [{model: PATH_OR_REPO_ID}]`. In transformers:",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained("PATH_OR_REPO_ID")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_ID")',
        'score = model(**tokenizer("prompt and reply" + tokenizer.eos_token, return_tensors="pt")).logits[0, 0]',
        "```",
    ]


def write_card(directory: Path, config: Any, meta: dict[str, Any], name: str) -> None:
    """Write ``directory/README.md`` for the checkpoint ``name`` (``directory`` may be its staging dir beside it;
    the model is saved there first, so its ``config.json`` says what kind of model the card describes)."""
    metrics = _last_metrics(directory.parent, meta.get("step"))  # the run's output_dir holds metrics.jsonl
    classifier = sequence_classifier_class(directory) is not None
    (directory / CARD_FILE).write_text(card_text(config, meta, metrics, name, classifier))


def push_to_hub(checkpoint: Path, repo_id: str) -> str:
    """Upload ``checkpoint`` (weights, tokenizer, card) to the hub model repo ``repo_id``; return its URL."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(checkpoint), commit_message=f"Flux: {checkpoint.name}")
    except Exception as error:  # offline, no token, no permission: the local checkpoint stays
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise FluxError(
            f"push_to_hub: cannot upload {checkpoint} to '{repo_id}' (offline? logged in?): {reason}; "
            f"the checkpoint is kept there: upload it later with `huggingface-cli upload {repo_id} {checkpoint}`"
        ) from None
    return f"https://huggingface.co/{repo_id}"
