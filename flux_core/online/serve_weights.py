"""Reading a weight update for ``flux serve``: only safetensors, only under ``--weights-root``, all checked first.

:func:`read_weight_update` returns a complete, validated state dict or raises one of
:mod:`flux_core.online.serve_requests`'s errors naming the directory, file or tensor; nothing
touches the live model until every tensor has passed, so an update is all or nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flux_core.online.serve_requests import BadRequest, Forbidden

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
SAFETENSORS_DTYPES = {"I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def resolve_update_directory(model_path: str, weights_root: Path) -> Path:
    """The directory ``model_path`` names (relative paths are under ``weights_root``), if it is under the root."""
    directory = (weights_root / model_path).resolve()  # an absolute model_path replaces weights_root
    if not directory.is_relative_to(weights_root):
        raise Forbidden(
            f"model_path {model_path} is outside --weights-root {weights_root}: "
            "write the weights under it, or restart flux serve with --weights-root covering that directory"
        )
    if not directory.is_dir():
        raise BadRequest(f"model_path {model_path} is not a directory")
    return directory


def read_weight_update(directory: Path, weights_root: Path, model: Any, device: Any) -> dict[str, Any]:
    """Every tensor in ``directory/*.safetensors``, checked against ``model``: names, shapes, dtypes, finiteness.

    Tied weights (``lm_head.weight`` = the embeddings) may appear under either name; buffers
    may be left out (they are not trained).
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise BadRequest(f"no *.safetensors file in {directory}")
    targets = model.state_dict(keep_vars=True)
    sources = {}  # tensor name -> the file holding it
    for file in files:
        if not file.resolve().is_relative_to(weights_root):
            raise Forbidden(f"{file} links outside --weights-root {weights_root}")
        for name, (shape, dtype) in _header(file).items():
            if name in sources:
                raise BadRequest(f"{file} and {sources[name]} both hold {name}")
            _check_entry(file, name, shape, dtype, targets)
            sources[name] = file
    _check_complete(directory, set(sources), model)
    return _load_finite(sources, device)


def _header(file: Path) -> dict[str, tuple[list[int], str]]:
    """``{name: (shape, safetensors dtype)}`` from ``file``'s header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {
                name: (handle.get_slice(name).get_shape(), handle.get_slice(name).get_dtype()) for name in handle.keys()
            }
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise BadRequest(f"{file} is not a readable safetensors file ({_first_line(error)}): rewrite it") from None


def _check_entry(file: Path, name: str, shape: list[int], dtype: str, targets: dict[str, Any]) -> None:
    if name not in targets:
        raise BadRequest(f"{file} holds {name}, which the served model does not have (weights of another model?)")
    target = targets[name]
    if list(shape) != list(target.shape):
        raise BadRequest(
            f"{file}: {name} has shape {list(shape)}, the served model's is {list(target.shape)} "
            "(weights of another model?)"
        )
    if target.is_floating_point() != (dtype in FLOAT_DTYPES) or (
        not target.is_floating_point() and SAFETENSORS_DTYPES.get(dtype) != str(target.dtype).removeprefix("torch.")
    ):
        raise BadRequest(f"{file}: {name} is {dtype}, the served model's is {target.dtype}")


def _check_complete(directory: Path, names: set[str], model: Any) -> None:
    """Every parameter is in the update under one of its names (tied parameters have several)."""
    aliases: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    missing = [group[0] for group in aliases.values() if not names.intersection(group)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BadRequest(
            f"{directory} lacks {len(missing)} of the model's {len(aliases)} weights ({shown}); nothing was loaded"
        )


def _load_finite(sources: dict[str, Path], device: Any) -> dict[str, Any]:
    import torch
    from safetensors import safe_open

    state = {}
    for file in sorted(set(sources.values())):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as handle:
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as error:  # noqa: BLE001 - a file damaged between the header check and the read
            raise BadRequest(f"{file} could not be read ({_first_line(error)}): rewrite it") from None
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise BadRequest(f"{file}: {name} holds NaN or infinite values; nothing was loaded")
        state.update(tensors)
    return state


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
