"""Checkpoints of a run with several processes (torchrun, ``accelerate launch``; one node or several).

Writing ``checkpoint-N`` takes every rank: under FSDP the weights are gathered from every
rank's shard (:mod:`flux_core.run.fsdp`), and each rank writes its own part of the
training state into the checkpoint (its RNG state; under FSDP or DeepSpeed its optimizer
shard). They all write into one staged directory, ``.checkpoint-N.tmp-PID`` named by the
main process (:func:`shared_staged_path`); the main process then adds the weights and
Flux's files and renames it into place once every rank is done, so ``checkpoint-N``
under its real name is complete, and a kill before that leaves only a staged directory,
which the next start removes (:mod:`flux_core.run.directory`).

Every rank must therefore see the same ``output_dir``: on several nodes it lives on a
filesystem they all mount. A rank that does not see the main process's staged directory
stops the run at the first checkpoint, on every rank, with one line saying so.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from flux_core.errors import FluxError
from flux_core.run.directory import is_main_process
from flux_core.run.layout import staged_path


def is_distributed() -> bool:
    """Whether this process trains in a process group of more than one."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@functools.cache  # once per process
def leave_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits, if it is still up.

    Nothing else tears it down (neither TRL's Trainer nor accelerate), and a process that exits with
    a gloo group alive can abort in the interpreter's teardown ("terminate called without an active
    exception", SIGABRT: gloo's worker threads outlive Python), which makes a finished run fail under
    torchrun. ``atexit`` runs while Python is still whole; destroying a group is local to the process.
    """
    import atexit

    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank is here (no-op with one process)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def shared_staged_path(path: Path) -> Path:
    """The empty staged directory of ``path`` that every rank writes into (a collective).

    The main process creates it (``.NAME.tmp-PID``, its own PID) and tells the others; a
    rank that cannot see it is on a node without the shared ``output_dir``, and then every
    rank raises the same one-line error instead of writing half a checkpoint.
    """
    import torch.distributed as dist

    name = [None]
    if is_main_process():
        staged = staged_path(path)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        name = [str(staged)]
    dist.broadcast_object_list(name, src=0)
    staged = Path(name[0])
    seen: list[bool | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, staged.is_dir())
    blind = [rank for rank, ok in enumerate(seen) if not ok]
    if blind:
        raise FluxError(
            f"output_dir {path.parent}: rank {blind[0]} does not see the checkpoint the main process is writing "
            f"({staged}); with several nodes put output_dir on a filesystem every node mounts (NFS, Lustre, ...)"
        )
    return staged
