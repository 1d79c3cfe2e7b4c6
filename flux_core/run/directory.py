"""One run per ``output_dir``: the lock, the previous-run guard and leftover cleanup.

:func:`open_run_dir` is what ``FluxTrainer.fit`` (and so ``flux train``) does before any
model loads:

1. **Lock.** The main process takes an exclusive ``fcntl.flock`` on
   ``output_dir/.flux.lock`` (and writes its PID there). A second run on the same
   directory fails at once with one line naming the holder's PID. The lock goes with
   the process, so a killed run never leaves the directory locked. The lock file
   itself stays (removing it would let two runs lock two different files).
2. **Leftovers.** Checkpoints are staged in hidden ``.NAME.tmp-PID`` directories and
   renamed into place (:mod:`flux_core.run.checkpoint`); a killed run can leave one behind,
   or, killed between the two renames of a replacement, a ``.NAME.old-PID`` aside with
   no ``NAME``. With the lock held no live run owns any of them, so every temp entry is
   removed and an aside whose ``NAME`` is missing is renamed back to ``NAME``.
3. **Previous run.** A directory holding a previous run's ``checkpoint-N/``,
   ``best/``, ``final/`` or ``metrics.jsonl`` is refused unless the run resumes it
   (``--resume``) or replaces it (``--overwrite``). ``--overwrite`` removes exactly
   those (renaming each to a hidden temp name first, so a kill part-way never leaves a
   half-deleted checkpoint under a real name); other files, such as the DPO
   reference cache ``.flux-cache/``, stay.

Every name above is spelled in :mod:`flux_core.run.layout`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flux_core.errors import FluxError
from flux_core.run.layout import (
    BEST_DIR,
    CACHE_DIR,
    FINAL_DIR,
    LEFTOVER_NAME,
    LOCK_FILE,
    METRICS_FILE,
    STAGED_TAG,
    checkpoint_step,
    staged_path,
)

# What a previous run leaves besides its checkpoint-N directories.
PREVIOUS_RUN_OUTPUTS = (BEST_DIR, FINAL_DIR, METRICS_FILE)


class OutputDirBusy(FluxError):
    """Another live run holds the output directory's lock."""


class PreviousRunError(FluxError):
    """The output directory holds a previous run and neither resume nor overwrite was asked for."""


def is_main_process() -> bool:
    """True unless a distributed launcher (torchrun, accelerate launch) started this as rank > 0."""
    return int(os.environ.get("RANK", "0")) == 0


def previous_run_entries(output_dir: Path) -> list[str]:
    """Names of a previous run's outputs in ``output_dir``, sorted (checkpoints by step)."""
    if not output_dir.is_dir():
        return []
    names = []
    for entry in output_dir.iterdir():
        if entry.name in PREVIOUS_RUN_OUTPUTS or (checkpoint_step(entry) is not None and entry.is_dir()):
            names.append(entry.name)

    def order(name: str) -> tuple[int, int, str]:
        step = checkpoint_step(name)
        return (0, step, "") if step is not None else (1, 0, name)

    return sorted(names, key=order)


class RunDirectory:
    """The output directory of one run; see the module docstring for what each step does.

    Only the main process locks and changes the directory; other ranks of a
    distributed run only read it.
    """

    def __init__(self, output_dir: str | Path, is_main: bool = True):
        self.path = Path(output_dir)
        self.is_main = is_main
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ lock

    def lock(self) -> None:
        """Take the run lock, or raise :class:`OutputDirBusy` naming the PID that holds it."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputDirBusy(
                f"{self.path}: another flux run (pid {holder}) is using this output_dir; "
                "wait for it to finish or choose another output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (closing the descriptor releases the flock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ leftovers

    def clean_leftovers(self) -> list[str]:
        """Remove every staged temp entry and restore orphaned asides; return what was done.

        Call with the lock held: then no live run is writing any of them.
        """
        done: list[str] = []
        for directory in (self.path, self.path / CACHE_DIR):
            if not directory.is_dir():
                continue
            asides: dict[str, list[Path]] = {}
            for entry in sorted(directory.iterdir()):
                match = LEFTOVER_NAME.match(entry.name)
                if match is None:
                    continue
                if match.group("kind") == STAGED_TAG:
                    _remove(entry)
                    done.append(f"removed {entry.name}")
                else:
                    asides.setdefault(match.group("name"), []).append(entry)
            for name, entries in asides.items():
                target = directory / name
                newest_first = sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)
                if not target.exists():
                    os.replace(newest_first.pop(0), target)
                    done.append(f"restored {name} from a run killed while replacing it")
                for entry in newest_first:
                    _remove(entry)
                    done.append(f"removed {entry.name}")
        return done

    # ------------------------------------------------------------------ previous run

    def check_previous_run(self, resume: bool, overwrite: bool) -> None:
        """Refuse a fresh run over a previous one; clear it first with ``overwrite``."""
        entries = previous_run_entries(self.path)
        if not entries or resume:
            return
        if overwrite:
            if self.is_main:
                self.clear(entries)
            return
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise PreviousRunError(
            f"{self.path} holds a previous run ({shown}); continue it with --resume (fit(resume=True)), "
            "replace it with --overwrite (fit(overwrite=True)), or choose another output_dir"
        )

    def clear(self, entries: list[str]) -> None:
        """Remove ``entries``: each is first renamed to a hidden temp name, then deleted."""
        for name in entries:
            entry = self.path / name
            trash = staged_path(entry)
            _remove(trash)
            os.replace(entry, trash)
            _remove(trash)

    # ------------------------------------------------------------------ checkpoints

    def checkpoints(self) -> list[Path]:
        """Every ``checkpoint-N`` directory, oldest first."""
        if not self.path.is_dir():
            return []
        found = [(checkpoint_step(p), p) for p in self.path.iterdir() if p.is_dir()]
        return [path for step, path in sorted((s, p) for s, p in found if s is not None)]


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        try:
            entry.unlink()
        except FileNotFoundError:
            pass


class open_run_dir:
    """Context manager: lock, clean and check ``output_dir`` for one run; unlock on exit.

    Args:
        output_dir: the run's ``config.output_dir``.
        resume: the run continues a previous one (its checkpoints are expected).
        overwrite: remove a previous run's outputs first.
        is_main: this process writes (default: rank 0 of a distributed launch).
    """

    def __init__(
        self, output_dir: str | Path, resume: bool = False, overwrite: bool = False, is_main: bool | None = None
    ):
        if resume and overwrite:
            raise FluxError("--resume and --overwrite exclude each other: continue the previous run or replace it")
        self.directory = RunDirectory(output_dir, is_main=is_main_process() if is_main is None else is_main)
        self.resume = resume
        self.overwrite = overwrite

    def __enter__(self) -> RunDirectory:
        directory = self.directory
        if directory.is_main:
            directory.lock()
            try:
                directory.clean_leftovers()
                directory.check_previous_run(self.resume, self.overwrite)
            except BaseException:
                directory.unlock()
                raise
        else:
            directory.check_previous_run(self.resume, self.overwrite)
        return directory

    def __exit__(self, *exc_info) -> None:
        self.directory.unlock()
