"""Model cards: a ``README.md`` in every checkpoint, following Hugging Face's conventions.

YAML front matter that the Hub reads (``base_model``, ``license`` carried over from the base
model's own card, ``library_name``, ``pipeline_tag``, ``tags``, ``datasets`` when the data is a
hub dataset; built with ``huggingface_hub.ModelCardData``), then what was trained, on what,
the checkpoint's metrics, how to load it and the config. A LoRA run's ``adapter/`` gets a card
of its own (``library_name: peft``, loading with peft). ``push_to_hub`` uploads a checkpoint,
card included, through ``huggingface_hub``.

The base model is named by its hub id when one is known: ``model_path`` itself, the repo of
the Hugging Face cache directory a local ``model_path`` lies in (``models--org--name``), or
the ``_name_or_path`` its ``config.json`` records. Nothing is downloaded: the base model's
license comes from a ``README.md`` in its local directory or in the hub cache.
"""

from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.modeling import sequence_classifier_class
from flux_core.report.trackers import run_name_of
from flux_core.run.layout import ADAPTER_DIR, CARD_FILE, CONFIG_FILE, METRICS_FILE

TAIL_BYTES = 1 << 16  # the step being saved is the last line of metrics.jsonl
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_CACHE_REPO = re.compile(r"^models--(?P<repo>.+)$")  # huggingface_hub's cache folder of a model repo
_LORA_NOTE = f" (a LoRA adapter, merged into these weights; the adapter alone is in {ADAPTER_DIR}/)"
# The base card's license keys (`license: other` comes with a name and a link).
LICENSE_KEYS = ("license", "license_name", "license_link")


def _is_hub_id(value: str | None) -> bool:
    return bool(value) and not Path(value).exists() and bool(_HUB_ID.match(value))


def base_model_id(model_path: str) -> str | None:
    """The hub id of the model at ``model_path``, or ``None`` when it has none that Flux can tell.

    A hub id is itself; a local directory under the Hugging Face cache
    (``.../models--org--name/snapshots/SHA``) is that repo; another local directory is the
    hub id its ``config.json`` records as ``_name_or_path`` (older transformers wrote it).
    """
    if _is_hub_id(model_path):
        return model_path
    path = Path(model_path).resolve()
    for part, below in zip(path.parts, path.parts[1:]):
        match = _HUB_CACHE_REPO.match(part)
        if match and below == "snapshots":
            return match.group("repo").replace("--", "/")  # hub ids never contain "--"
    try:
        recorded = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and _is_hub_id(recorded) else None


def base_model_license(model_path: str, hub_id: str | None) -> dict[str, str]:
    """``license`` (and ``license_name``, ``license_link``) from the front matter of the base model's
    ``README.md``: in its local directory, else in the hub cache (never downloaded); ``{}`` when unknown."""
    import yaml
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    cards = [Path(model_path) / CARD_FILE]
    if hub_id:
        cached = try_to_load_from_cache(hub_id, CARD_FILE)
        if isinstance(cached, str):  # None (never fetched) or a "known missing" marker otherwise
            cards.append(Path(cached))
    for card in cards:
        if not card.is_file():
            continue
        try:
            front = metadata_load(card) or {}
        except (yaml.YAMLError, ValueError) as error:  # the base card's problem: not a reason to stop training
            warnings.warn(
                f"{card}: front matter does not parse ({error}); the model card gets no license",
                UserWarning,
                stacklevel=2,
            )
            return {}
        return {key: str(front[key]) for key in LICENSE_KEYS if front.get(key)}
    return {}


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


def data_paths(config: Any) -> list[str]:
    """The paths (or hub ids) of ``config.data``: one source, or each source of a mixture."""
    sources = config.data if isinstance(config.data, list) else [config.data]
    return [source.path for source in sources if getattr(source, "path", None)]


def front_matter(config: Any, classifier: bool, adapter: bool = False) -> dict[str, Any]:
    """The card's YAML front matter as a dict (``ModelCardData`` checks and orders it)."""
    from huggingface_hub import ModelCardData

    hub_id = base_model_id(config.model_path)
    hub_data = [path for path in data_paths(config) if _is_hub_id(path)]
    data = ModelCardData(
        base_model=hub_id,
        **base_model_license(config.model_path, hub_id),
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-classification" if classifier else "text-generation",
        tags=["flux", config.algorithm.name, "trl"] + (["lora", "peft"] if config.lora else []),
        datasets=hub_data or None,
    )
    return data.to_dict()


def _card(front: dict[str, Any], body: list[str]) -> str:
    import yaml

    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "", *body])


def _base_link(model_path: str, hub_id: str | None) -> str:
    if hub_id is None:
        return f"`{model_path}`"
    local = "" if hub_id == model_path else f" (loaded from `{model_path}`)"
    return f"[{hub_id}](https://huggingface.co/{hub_id}){local}"


def _at_step(config: Any, meta: dict[str, Any]) -> str:
    total = f" of {config.num_steps}" if config.num_steps else ""
    return f"step {meta.get('step')}{total}"


def _title(config: Any, hub_id: str | None) -> str:
    """``<run name>: <ALGORITHM> fine-tune of <base model>``."""
    base = hub_id or Path(config.model_path).name
    return f"{run_name_of(config)}: {config.algorithm.name.upper()} fine-tune of {base}"


def card_text(config: Any, meta: dict[str, Any], metrics: dict[str, float], name: str, classifier: bool = False) -> str:
    """The ``README.md`` of one checkpoint; ``classifier``: the model is a sequence classifier
    (a reward model), which gets its own pipeline tag and loading code."""
    front = front_matter(config, classifier)
    hub_id = front.get("base_model")
    data = ", ".join(f"`{path}`" for path in data_paths(config))
    score = meta.get("score")
    body = [
        f"# {_title(config, hub_id)}",
        "",
        f"{config.algorithm.name.upper()} fine-tune of {_base_link(config.model_path, hub_id)}, trained with Flux "
        f"on Hugging Face TRL{_LORA_NOTE if config.lora else ''}.",
        "",
        f"- checkpoint: `{name}` at {_at_step(config, meta)}"
        + (f"; {meta.get('score_name')} {score:.4f}" if isinstance(score, (int, float)) else ""),
        f"- data: {data}" if data else "- data: passed to `fit()` in Python",
        f"- batch size {config.batch_size}, learning rate {config.learning_rate}, max length {config.max_length}, "
        f"seed {config.seed}",
        *(
            []
            if "license" in front
            else [
                "- license: unknown (no local copy of the base model's card names one): add the base model's "
                "`license` to the front matter before sharing"
            ]
        ),
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
    return _card(front, body)


def adapter_card_text(config: Any, meta: dict[str, Any], name: str, classifier: bool = False) -> str:
    """The ``README.md`` of a LoRA run's ``adapter/`` (instead of peft's empty template): what it is,
    its base model and how to load it with peft."""
    front = front_matter(config, classifier, adapter=True)
    hub_id = front.get("base_model")
    lora = config.lora
    peft_class = "AutoPeftModelForSequenceClassification" if classifier else "AutoPeftModelForCausalLM"
    base_class = "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM"
    base = hub_id or config.model_path
    modules = [lora.target_modules] if isinstance(lora.target_modules, str) else lora.target_modules
    targets = ", ".join(f"`{module}`" for module in modules)
    body = [
        f"# {_title(config, hub_id)} (LoRA adapter)",
        "",
        f"The LoRA adapter of `{name}` ({_at_step(config, meta)}): "
        f"{config.algorithm.name.upper()} on {_base_link(config.model_path, hub_id)}, trained with Flux on Hugging "
        f"Face TRL. Rank {lora.r}, alpha {lora.alpha}, dropout {lora.dropout}, target modules {targets}. "
        "The directory above holds the same model with this adapter merged in, and its model card.",
        "",
        "## How to load",
        "",
        "```python",
        f"from peft import {peft_class}",
        "",
        f'model = {peft_class}.from_pretrained("PATH_TO/{ADAPTER_DIR}")  # and the base model it was trained on',
        "```",
        "",
        "or onto a base model you load yourself:",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {base_class}",
        "",
        f'model = PeftModel.from_pretrained({base_class}.from_pretrained("{base}"), "PATH_TO/{ADAPTER_DIR}")',
        "```",
        "",
    ]
    return _card(front, body)


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
    the model is saved there first, so its ``config.json`` says what kind of model the card describes),
    and ``directory/adapter/README.md`` when it holds a LoRA adapter."""
    metrics = _last_metrics(directory.parent, meta.get("step"))  # the run's output_dir holds metrics.jsonl
    classifier = sequence_classifier_class(directory) is not None
    (directory / CARD_FILE).write_text(card_text(config, meta, metrics, name, classifier))
    if (directory / ADAPTER_DIR).is_dir() and config.lora is not None:
        (directory / ADAPTER_DIR / CARD_FILE).write_text(adapter_card_text(config, meta, name, classifier))


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
            f"the checkpoint is kept there: upload it later with `hf upload {repo_id} {shlex.quote(str(checkpoint))}`"
        ) from None
    return f"https://huggingface.co/{repo_id}"
