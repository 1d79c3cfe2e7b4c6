"""Draw ``metrics.png`` at the end of ``flux train`` without making the run wait for matplotlib.

Importing matplotlib, loading its fonts and rendering the picture take 1-2 CPU-seconds, about
5% of a 120-step run of the tiny model. :class:`PlotHelper` starts a helper process when the
run starts; it imports matplotlib and renders a throwaway figure while the training process
imports TRL and loads the model (single-threaded work: a second core is idle), then waits for
:meth:`PlotHelper.draw` to ask for the picture, which leaves only the drawing itself at the end
of the run. ``flux train`` waits for it, so the file is there when the command returns. On a
machine whose cores are all busy the helper saves nothing (it costs ~0.5 CPU-seconds more than
drawing in-process: its own interpreter). Should the helper die, the picture is drawn in-process.

Run as ``python -m flux_core.report.background``: the helper (one JSON request on stdin,
``{"output_dir", "out", "algorithm", "declared"}``, the last the algorithm's panels, so that the helper
needs no plugins; one JSON reply on stdout, ``{"path"}`` or ``{"error"}``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import weakref
from pathlib import Path

from flux_core.errors import FluxError


class PlotHelper:
    """The helper process of one ``flux train`` (see the module docstring)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # A run that fails or is preempted never asks for the picture: stop the helper when this
        # object goes (or the interpreter exits), whichever path the run took.
        self._stop = weakref.finalize(self, _stop, self.process)

    def draw(self, output_dir: str | Path, out: str | Path | None = None, algorithm: str | None = None) -> Path:
        """Draw the run's picture (as :func:`flux_core.report.plot.plot_run`) and return its path."""
        from flux_core.report.plot import declared_panels  # the registry is built here: the helper needs none

        panels = declared_panels(algorithm)
        request = {
            "output_dir": str(output_dir),
            "out": None if out is None else str(out),
            "algorithm": algorithm,
            "declared": None if panels is None else [dataclasses.astuple(panel) for panel in panels],
        }
        process, self.process = self.process, None
        try:
            reply, _ = process.communicate(json.dumps(request) + "\n")
            answer = json.loads(reply.strip().splitlines()[-1]) if reply.strip() else {}
        except (OSError, ValueError):
            answer = {}
        if "path" in answer:
            return Path(answer["path"])
        if "error" in answer:
            raise FluxError(answer["error"])
        from flux_core.report.plot import plot_run  # the helper died: draw here

        return plot_run(output_dir, out, algorithm, panels)

    def close(self) -> None:
        """Stop the helper if :meth:`draw` was not called (the run failed or was preempted)."""
        self.process = None
        self._stop()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def _serve() -> int:
    """The helper: import and warm up matplotlib, then draw the one picture asked for on stdin."""
    import io

    from matplotlib.figure import Figure

    from flux_core.registry import PlotPanel
    from flux_core.report.plot import DPI, plot_run

    warm = Figure(figsize=(1, 1), dpi=DPI)  # fonts and the Agg canvas: loaded now, not when asked
    warm.subplots().set_title("warm-up")
    warm.savefig(io.BytesIO(), format="png")
    line = sys.stdin.readline()
    if not line.strip():  # the run ended without asking (it failed, or was preempted)
        return 0
    request = json.loads(line)
    declared = request.get("declared")
    declared = (
        None if declared is None else [PlotPanel(title, tuple(metrics), ylabel) for title, metrics, ylabel in declared]
    )
    try:
        path = plot_run(request["output_dir"], request.get("out"), request.get("algorithm"), declared)
    except FluxError as error:
        print(json.dumps({"error": str(error)}))
        return 0
    print(json.dumps({"path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
