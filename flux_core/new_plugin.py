"""``flux new-plugin NAME --kind KIND``: a ready-to-install plugin package, written from the templates in
``flux_core/templates/`` (``common/`` for every kind, then ``<kind>/``; ``string.Template`` placeholders).

In a template path, ``_package`` becomes the import package (``flux_<name>``), ``_tests`` becomes ``tests``
and ``.tmpl`` is dropped; ``$name`` in a file name is the plugin's name. The package's own tests use Flux's
test kit (:mod:`flux_core.testing`) and pass as written.
"""

from __future__ import annotations

import importlib.metadata
import keyword
import re
import shutil
import string
import tempfile
from pathlib import Path

from flux_core.errors import FluxError

TEMPLATES = Path(__file__).resolve().parent / "templates"

# kind -> (what the package is, its dependencies besides flux-train)
KINDS = {
    "algorithm": ("A training algorithm for Flux", ('"trl>=1.16,<2"',)),
    "loss": ("A DPO loss for Flux", ('"flux-dpo>=0.1.0"',)),
    "reward": ("A reward function for Flux's GRPO and PPO", ('"flux-grpo>=0.1.0"',)),
    "reference": ("A reference policy for Flux's DPO", ('"flux-dpo>=0.1.0"',)),
}
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
PATH_PARTS = {"_package": "{package}", "_tests": "tests"}


def plugin_names_in_use() -> set[str]:
    """Entry-point names of installed Flux plugins and Flux's own algorithm names: a new plugin may not reuse one
    (Flux loads one plugin per entry-point name, and an algorithm name registered twice is an error)."""
    from flux_core.registry import KNOWN_ALGORITHM_PACKAGES

    installed = {entry_point.name for entry_point in importlib.metadata.entry_points(group="flux")}
    return installed | set(KNOWN_ALGORITHM_PACKAGES)


def check_name(name: str) -> None:
    """Refuse, in one line, a name that is not a lowercase Python identifier or that a plugin already uses."""
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise FluxError(
            f"plugin name '{name}' must be a lowercase Python identifier of at most 40 characters "
            "(letters, digits, underscores; a letter first), e.g. my_loss"
        )
    if name in plugin_names_in_use():
        raise FluxError(
            f"plugin name '{name}' is already taken by an installed plugin or a Flux algorithm: pick another"
        )


def template_values(name: str, kind: str) -> dict[str, str]:
    """What the templates' placeholders stand for."""
    from flux_core import __version__

    summary, dependencies = KINDS[kind]
    return {
        "name": name,
        "package": f"flux_{name}",
        "distribution": f"flux-{name.replace('_', '-')}",
        "title": "".join(part.capitalize() for part in name.split("_")),
        "summary": summary,
        "dependencies": ", ".join((f'"flux-train>={__version__}"', *dependencies)),
    }


def render_package(kind: str, values: dict[str, str], target: Path) -> list[Path]:
    """Write ``common/`` and ``<kind>/`` templates under ``target``; return the files written."""
    written = []
    for root in (TEMPLATES / "common", TEMPLATES / kind):
        for template in sorted(root.rglob("*.tmpl")):
            parts = [PATH_PARTS.get(part, part).format(**values) for part in template.relative_to(root).parts]
            path = target.joinpath(*parts).with_suffix("")
            path = path.with_name(string.Template(path.name).substitute(values))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(string.Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
            written.append(path)
    return written


def new_plugin(name: str, kind: str, directory: str | Path | None = None) -> Path:
    """Write the ``kind`` plugin package ``name`` into ``directory`` (default ``./flux-<name>``), which must not
    exist; return it. Written into a temporary sibling first, so a failure leaves nothing half-made."""
    if kind not in KINDS:
        raise FluxError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    check_name(name)
    values = template_values(name, kind)
    target = Path(directory if directory is not None else values["distribution"])
    if target.exists() or target.is_symlink():
        raise FluxError(f"{target} already exists: give another directory with --directory, or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp's is private to its owner; a package directory is not
    try:
        render_package(kind, values, scratch)
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target
