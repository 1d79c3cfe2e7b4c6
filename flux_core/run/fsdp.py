"""Saving a model that FSDP has sharded (``--accelerate-config configs/accelerate/fsdp.yaml``).

Under FSDP each parameter is a shard (FSDP2: a ``DTensor``); ``save_pretrained`` on the
sharded model fails with "Attempted to access the data pointer on an invalid python
storage" (seen on one H100 with FSDP2, ``num_processes: 1``; reproduced on CPU with
``fully_shard`` over gloo). :func:`full_state_dict` gathers the full, unsharded weights
onto the main process's CPU memory, with the options ``accelerate``'s
``Accelerator.get_state_dict`` uses for FSDP2 (accelerate 1.15). It calls torch directly
because accelerate only knows a model is FSDP-wrapped on GPUs: on CPU its state stays
``MULTI_CPU`` and ``get_state_dict`` would return the shards.

Gathering is a collective: with more than one process every rank calls it, at every
save point, before the main process writes (:mod:`flux_core.run.distributed`).
"""

from __future__ import annotations

from typing import Any

from flux_core.errors import FluxError


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is wrapped by FSDP (FSDP2's ``fully_shard`` or FSDP1's wrapper)."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(model, (FSDPModule, FullyShardedDataParallel))


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def full_state_dict(model: Any) -> dict[str, Any]:
    """The full state dict of an FSDP-wrapped ``model``, on the CPU of the main process
    (other ranks get ``{}``). A collective: call it on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def weights_for_save(model: Any) -> dict[str, Any]:
    """:func:`full_state_dict` of ``model`` for a save that only this process runs.

    With one process that is the whole collective. With several, every rank must gather
    together before the main process writes (:meth:`flux_core.run.checkpoint.CheckpointManager.stage`
    does); reaching here instead would wait for the others forever, so fail at once.
    """
    processes = world_size()
    if processes > 1:
        raise FluxError(
            f"saving an FSDP model with {processes} processes from one of them: gather its weights on every "
            "rank first (CheckpointManager.stage, then pass them as weights=)"
        )
    return full_state_dict(model)
