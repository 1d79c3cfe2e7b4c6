"""Draw a run's ``metrics.jsonl`` as one PNG: the panels the tutorial tells users to watch.

Preference runs (DPO) get loss, ``reward_margin``, chosen vs rejected reward and
accuracy; online runs (GRPO, PPO) get reward, KL, entropy and completion length. Each
panel shows the raw points faintly and a smoothed line over them (a bias-corrected
moving average whose window grows with the run: about a tenth of its steps), with every
``checkpoint-N`` step marked and the ``best`` step highlighted.
"""

from __future__ import annotations

import json
from pathlib import Path

from flux_core.errors import FluxError
from flux_core.report.diagnostics import read_metrics
from flux_core.run.layout import BEST_DIR, CHECKPOINT_PREFIX, META_FILE, METRICS_FILE, PLOT_FILE, checkpoint_step

PREFERENCE_PANELS = (
    ("loss", ("loss",)),
    ("reward margin", ("reward_margin",)),
    ("chosen vs rejected reward", ("chosen_reward", "rejected_reward")),
    ("accuracy", ("accuracy",)),
)
ONLINE_PANELS = (
    ("reward", ("reward",)),
    ("KL to the reference", ("kl",)),
    ("entropy", ("entropy",)),
    ("completion length", ("completion_length",)),
)
FIGURE_INCHES, DPI = (12, 8), 100  # 1200 x 800 pixels


def smoothing_weight(steps: int) -> float:
    """Weight on the past: 0.6 (TensorBoard's default) for short runs, up to 0.99 for long ones."""
    return min(0.99, max(0.6, 1 - 10 / max(steps, 1)))


def smoothed(values: list[float | None]) -> list[float | None]:
    """Bias-corrected exponential moving average (see :func:`smoothing_weight`); gaps stay gaps."""
    weight = smoothing_weight(len(values))
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


def plot_run(output_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's picture (default ``output_dir/metrics.png``) and return its path."""
    output_dir = Path(output_dir)
    metrics_file = output_dir / METRICS_FILE
    if not metrics_file.exists():
        raise FluxError(f"{output_dir}: no {METRICS_FILE} (is this a Flux output_dir?)")
    rows = read_metrics(metrics_file)
    if not rows:
        raise FluxError(f"{metrics_file}: no steps recorded yet")
    panels = PREFERENCE_PANELS if any("reward_margin" in row for row in rows) else ONLINE_PANELS
    out = Path(out) if out else output_dir / PLOT_FILE

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=FIGURE_INCHES, dpi=DPI)
    checkpoints, best = saved_steps(output_dir)
    steps = [row["step"] for row in rows]
    for axis, (title, names) in zip(axes.flat, panels, strict=True):
        _draw_panel(axis, title, names, steps, rows, checkpoints, best)
    figure.suptitle(f"{output_dir}  ({len(rows)} steps)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)
    plt.close(figure)
    return out


def _draw_panel(axis, title, names, steps, rows, checkpoints, best) -> None:
    axis.set_title(title)
    axis.set_xlabel("step")
    drawn = False
    for name in names:
        values = [row.get(name) for row in rows]
        if all(value is None for value in values):
            continue
        drawn = True
        points = axis.plot(steps, values, ".", alpha=0.3, markersize=3)
        axis.plot(steps, smoothed(values), "-", color=points[0].get_color(), label=name)
    if not drawn:
        axis.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axis.transAxes)
        return
    for step in checkpoints:
        axis.axvline(step, color="grey", linewidth=0.6, linestyle=":")
    if best is not None:
        axis.axvline(best, color="tab:green", linewidth=1.2, label=f"best (step {best})")
    axis.legend(loc="best", fontsize="small")
