"""What ``flux serve`` accepts: the JSON bodies of its endpoints, and the HTTP errors it answers.

Bodies are parsed by pydantic-core (bounded nesting) and validated by strict pydantic models:
``true`` is not a token id, ``"0.5"`` is not a temperature, NaN and infinity are not numbers,
and a field flux serve does not implement is refused rather than ignored. Every refusal is one
line naming the field (``sampling_params.stop_token_ids: ...``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError


class RequestRefused(ValueError):
    """A request the server answers with ``status`` and this one-line message."""

    status = 400


class BadRequest(RequestRefused):
    """HTTP 400: the body is malformed or asks for something impossible."""


class Forbidden(RequestRefused):
    """HTTP 403: the request names a path outside ``--weights-root``."""

    status = 403


class PayloadTooLarge(RequestRefused):
    """HTTP 413: the body is larger than ``--max-body-mb``."""

    status = 413


class ServerBusy(RequestRefused):
    """HTTP 503: ``--max-queued-requests`` requests are already waiting."""

    status = 503


class GenerationTimeout(RequestRefused):
    """HTTP 504: the request was not answered within ``--request-timeout`` seconds."""

    status = 504


TokenRow = Annotated[list[StrictInt], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SamplingParams(_Strict):
    """The subset of SGLang's ``sampling_params`` that flux serve implements."""

    max_new_tokens: StrictInt | None = Field(
        default=None, ge=1, description="Most tokens to generate (default 128, or what fits the context)."
    )
    temperature: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling mass.")
    top_k: StrictInt = Field(default=-1, ge=-1, description="-1 (or 0): off.")
    stop_token_ids: list[StrictInt] | None = Field(
        default=None, description="Token ids that end a completion (default: the model's end-of-sequence ids)."
    )
    ignore_eos: StrictBool = Field(default=False, description="Generate max_new_tokens whatever comes out.")


class GenerateRequest(_Strict):
    """``POST /generate``: token-id prompts (one, or a batch) and how to sample them."""

    input_ids: TokenRow | Annotated[list[TokenRow], Field(min_length=1)]
    sampling_params: SamplingParams | None = None
    return_logprob: StrictBool = True

    @property
    def single(self) -> bool:
        """One unbatched prompt (answered with a bare object, as SGLang does)."""
        return isinstance(self.input_ids[0], int)

    @property
    def rows(self) -> list[list[int]]:
        return [self.input_ids] if self.single else self.input_ids  # type: ignore[list-item]


class UpdateWeightsRequest(_Strict):
    """``POST /update_weights_from_disk``: a directory of ``*.safetensors`` under ``--weights-root``."""

    model_path: str = Field(min_length=1)


def parse_body(body: bytes, model: type[_Strict]) -> Any:
    """``body`` (JSON) validated as ``model``; :class:`BadRequest` with one line naming the field otherwise."""
    import pydantic_core

    try:
        data = pydantic_core.from_json(body)  # bounded nesting: a 100k-deep body is an error, not a crash
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(data).__name__}")
    if model is GenerateRequest and "input_ids" not in data and "text" in data:
        raise BadRequest("flux serve takes token ids: send input_ids (text prompts are not supported)")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(describe(error, data)) from None


def describe(error: ValidationError, data: dict[str, Any]) -> str:
    """One line for the first problem pydantic found: ``field.path: what is wrong (got VALUE)``."""
    problem = error.errors()[0]
    location = list(problem["loc"])
    if location and location[0] == "input_ids":
        return _describe_input_ids(data.get("input_ids"))
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    if problem["type"] == "extra_forbidden":
        return f"{path}: flux serve does not support this field (remove it)"
    return f"{path or 'body'}: {problem['msg']} (got {_excerpt(problem.get('input'))})"


def _describe_input_ids(value: Any) -> str:
    """``input_ids`` is a union (one row or a batch): say which element breaks it, not both union branches."""
    wanted = "input_ids must be a non-empty list of token ids (integers) or a non-empty list of such lists"
    if not isinstance(value, list) or not value:
        return f"{wanted} (got {_excerpt(value)})"
    if any(isinstance(item, list) for item in value):
        for index, row in enumerate(value):
            if not isinstance(row, list) or not row:
                return f"{wanted}: input_ids[{index}] is {_excerpt(row)}"
            for position, token in enumerate(row):
                if type(token) is not int:
                    return f"{wanted}: input_ids[{index}][{position}] is {_excerpt(token)}"
    for index, token in enumerate(value):
        if type(token) is not int:
            return f"{wanted}: input_ids[{index}] is {_excerpt(token)}"
    return wanted


def _excerpt(value: Any, limit: int = 60) -> str:
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
