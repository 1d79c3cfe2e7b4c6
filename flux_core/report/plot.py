"""Draw a run's ``metrics.jsonl`` as one PNG: the panels its algorithm declares.

Each algorithm names its panels (``Algorithm.plot_panels``, :class:`~flux_core.registry.PlotPanel`):
DPO loss, reward margin, chosen vs rejected reward and accuracy; GRPO and PPO reward, KL,
entropy and completion length; SFT loss and token accuracy; and so on. The algorithm is read
from the config saved with the run's checkpoints; before the first checkpoint, the algorithm
whose panels the recorded metrics fill best is drawn. Each panel shows the raw points faintly
and a smoothed line over them (:func:`smoothed`), every ``checkpoint-N`` step dotted and the
``best`` step green, all named in its legend; metrics recorded at a few steps only (``eval_*``
at save points) are drawn as joined points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from flux_core.errors import FluxError
from flux_core.registry import DEFAULT_PLOT_PANELS, PlotPanel, get_registry
from flux_core.report.diagnostics import read_metrics
from flux_core.run.layout import (
    BEST_DIR,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    FINAL_DIR,
    META_FILE,
    METRICS_FILE,
    PLOT_FILE,
    checkpoint_step,
)

FIGURE_INCHES, DPI = (12, 8), 100  # 1200 x 800 pixels
# Metric colours: matplotlib's first ones without green, which marks best/ alone.
METRIC_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:cyan")
SPAN_FRACTION = 0.05  # the smoothing window: 5% of the run's steps...
MIN_SPAN = 3  # ...and at least 3 steps (weight 0.5 on the past), so short runs are smoothed lightly


def smoothing_weight(steps: int) -> float:
    """The moving average's weight on the past for a run of ``steps`` steps.

    A span of :data:`SPAN_FRACTION` of the run (at least :data:`MIN_SPAN` steps), as pandas'
    ``ewm(span=...)`` defines it: ``1 - 2 / (span + 1)``. The line then follows a change in the
    metric to within 5% in about a tenth of the run (``weight ** (2 * span)`` is under 2%).
    """
    span = max(MIN_SPAN, SPAN_FRACTION * steps)
    return 1 - 2 / (span + 1)


def smoothed(values: Sequence[float | None], weight: float | None = None) -> list[float | None]:
    """Exponential moving average, debiased as TensorBoard does (divided by ``1 - weight ** n`` after n
    points, so it starts at the first value instead of ramping up from zero); gaps stay gaps.

    ``weight``: on the past, default :func:`smoothing_weight` of ``len(values)``.
    """
    weight = smoothing_weight(len(values)) if weight is None else weight
    average, seen, out = 0.0, 0, []
    for value in values:
        if value is None:
            out.append(None)
            continue
        average = weight * average + (1 - weight) * value
        seen += 1
        out.append(average / (1 - weight**seen))
    return out


def saved_steps(output_dir: Path) -> tuple[list[int], int | None]:
    """Steps of the ``checkpoint-N`` directories, and the step ``best/`` holds."""
    checkpoints = sorted(
        step
        for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if (step := checkpoint_step(path)) is not None and path.is_dir()
    )
    best = None
    meta = output_dir / BEST_DIR / META_FILE
    if meta.exists():
        best = json.loads(meta.read_text()).get("step")
    return checkpoints, best


def saved_algorithm(output_dir: Path, checkpoints: Sequence[int]) -> str | None:
    """``algorithm.name`` from the config saved in ``best/``, ``final/`` or the newest ``checkpoint-N``
    (``None`` before the run's first save)."""
    directories = [BEST_DIR, FINAL_DIR, *(f"{CHECKPOINT_PREFIX}{step}" for step in reversed(checkpoints))]
    for directory in directories:
        config_file = output_dir / directory / CONFIG_FILE
        if config_file.is_file():
            algorithm = (yaml.safe_load(config_file.read_text()) or {}).get("algorithm") or {}
            return algorithm.get("name")
    return None


def _values(rows: Sequence[Mapping], name: str) -> list[float | None]:
    """One metric at every step (``None`` where it was not recorded or not finite)."""
    values = (row.get(name) for row in rows)
    return [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def _recorded(panel: PlotPanel, rows: Sequence[Mapping]) -> bool:
    return any(value is not None for name in panel.metrics for value in _values(rows, name))


def declared_panels(algorithm: str | None) -> tuple[PlotPanel, ...] | None:
    """``Algorithm.plot_panels`` of ``algorithm``; ``None`` when it is unknown or its plugin not installed."""
    known = get_registry().algorithms.get(algorithm) if algorithm else None
    return known.plot_panels if known else None


def panels_for(
    rows: Sequence[Mapping], algorithm: str | None, declared: Sequence[PlotPanel] | None = None
) -> list[PlotPanel]:
    """The panels to draw: ``declared`` (default: ``algorithm``'s) that the run recorded. For an unknown
    algorithm (``None``, or its plugin not installed), those of the installed algorithm whose panels ``rows``
    fill best; when none fits, the panels every algorithm records (:data:`DEFAULT_PLOT_PANELS`)."""
    declared = declared if declared is not None else declared_panels(algorithm)
    if declared is None:
        algorithms = get_registry().algorithms

        def fit(panels: Sequence[PlotPanel]) -> int:
            recorded = sum(_recorded(panel, rows) for panel in panels)
            return recorded - (len(panels) - recorded)

        declared = max((a.plot_panels for a in algorithms.values()), key=fit, default=DEFAULT_PLOT_PANELS)
    panels = [panel for panel in declared if _recorded(panel, rows)]
    return panels or [panel for panel in DEFAULT_PLOT_PANELS if _recorded(panel, rows)]


def plot_run(
    output_dir: str | Path,
    out: str | Path | None = None,
    algorithm: str | None = None,
    declared: Sequence[PlotPanel] | None = None,
) -> Path:
    """Write the run's picture (default ``output_dir/metrics.png``) and return its path.

    ``algorithm``: the run's ``algorithm.name`` (default: read from its saved config); ``declared``: its
    ``plot_panels`` (default: from the registry).
    """
    output_dir = Path(output_dir)
    figure = run_figure(output_dir, algorithm, declared)
    out = Path(out) if out else output_dir / PLOT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)
    return out


def run_figure(output_dir: str | Path, algorithm: str | None = None, declared: Sequence[PlotPanel] | None = None):
    """The ``matplotlib.figure.Figure`` of the run in ``output_dir`` (see :func:`plot_run`)."""
    output_dir = Path(output_dir)
    metrics_file = output_dir / METRICS_FILE
    if not metrics_file.exists():
        raise FluxError(f"{output_dir}: no {METRICS_FILE} (is this a Flux output_dir?)")
    rows = read_metrics(metrics_file)
    if not rows:
        raise FluxError(f"{metrics_file}: no steps recorded yet")
    checkpoints, best = saved_steps(output_dir)
    algorithm = algorithm or saved_algorithm(output_dir, checkpoints)
    panels = panels_for(rows, algorithm, declared)
    if not panels:
        names = ", ".join(name for panel in DEFAULT_PLOT_PANELS for name in panel.metrics)
        raise FluxError(f"{metrics_file}: nothing to plot: no step records any of {names}")
    return draw_figure(rows, panels, checkpoints, best, title=_title(output_dir, algorithm, len(rows)))


def _title(output_dir: Path, algorithm: str | None, steps: int) -> str:
    run = output_dir.resolve().name
    return f"{run}: {algorithm} ({steps} steps)" if algorithm else f"{run} ({steps} steps)"


def draw_figure(
    rows: Sequence[Mapping], panels: Sequence[PlotPanel], checkpoints: Sequence[int], best: int | None, title: str
):
    """The ``matplotlib.figure.Figure`` of ``panels`` over ``rows`` (drawn off-screen, not shown)."""
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot state, no display needed

    columns = len(panels) if len(panels) <= 3 else 2 if len(panels) == 4 else 3
    rows_of_panels = math.ceil(len(panels) / columns)
    # Fixed margins: a "tight" layout measures every label by rendering the figure twice, doubling the cost.
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.91, wspace=0.25, hspace=0.32)
    axes = list(figure.subplots(rows_of_panels, columns, squeeze=False).flat)
    steps = [row["step"] for row in rows]
    for axis, panel in zip(axes, panels):
        _draw_panel(axis, panel, steps, rows, checkpoints, best)
    for axis in axes[len(panels) :]:
        axis.remove()  # a 5th panel in a 2 x 3 grid: no empty frame beside it
    figure.suptitle(title)
    return figure


def _draw_panel(axis, panel: PlotPanel, steps, rows, checkpoints, best) -> None:
    axis.set_title(panel.title)
    axis.set_xlabel("step")
    axis.set_ylabel(panel.ylabel, fontsize="small")
    axis.set_prop_cycle(color=METRIC_COLORS)
    for name in panel.metrics:
        values = _values(rows, name)
        points = [(step, value) for step, value in zip(steps, values) if value is not None]
        if not points:
            continue
        if 2 * len(points) < len(steps):  # recorded at a few steps (eval_* at save points): join them
            axis.plot(*zip(*points), "o-", markersize=4, label=name)
        else:
            raw = axis.plot(steps, values, ".", alpha=0.3, markersize=3)
            axis.plot(steps, smoothed(values), "-", color=raw[0].get_color(), label=name)
    for index, step in enumerate(checkpoints):
        axis.axvline(step, color="grey", linewidth=0.6, linestyle=":", label="checkpoint" if index == 0 else None)
    if best is not None:
        axis.axvline(best, color="tab:green", linewidth=1.2, label=f"best (step {best})")
    axis.legend(loc="best", fontsize="small")
