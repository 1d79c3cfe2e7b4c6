"""What is installed: Flux's distribution, its plugins' versions, and packages that shadow ``flux``.

Flux's core is the distribution ``flux-train``; its import packages are ``flux`` (the user
API) and ``flux_core``. ``flux-core`` on PyPI is an unrelated project whose wheel also
ships a top-level ``flux`` package (and a ``flux`` command). Installed beside Flux, its
``flux`` either comes first on ``sys.path`` or has written its files into Flux's ``flux/``
directory; :func:`flux_package_problem` says which, in one line that names the other
distribution and what to do. ``flux`` (the CLI) prints it as a warning on every command and
``import flux`` warns about the second case (in the first, the other ``flux`` is what
imports). Both checks ask the import system and list one directory (about 1 ms and 0.1 ms
measured); package metadata is read only to name the other distribution once something is wrong.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from flux_core import DISTRIBUTION

# What Flux's `flux/` directory holds; anything else there was written by another distribution.
OWN_FLUX_ENTRIES = frozenset({"__init__.py", "__pycache__", "py.typed"})


def flux_package_problem() -> str | None:
    """One line when ``import flux`` would not load Flux's own ``flux`` package, or loads it mixed
    with another distribution's files; ``None`` when all is well."""
    import flux_core

    ours = Path(flux_core.__file__).resolve().parent.parent / "flux"
    imported = importable_flux_dir()
    if imported is not None and imported.resolve() != ours:
        owner = other_flux_distribution(imported)
        return (
            f"`import flux` loads {_describe(owner)}'s flux package ({imported}), not Flux's ({DISTRIBUTION}): "
            f"pip uninstall {owner[0] if owner else 'it'}"
        )
    return mixed_flux_package_problem(ours)


def mixed_flux_package_problem(flux_dir: str | os.PathLike) -> str | None:
    """One line when Flux's ``flux_dir`` holds files another distribution installed there, else ``None``."""
    flux_dir = Path(flux_dir)
    try:
        foreign = sorted(set(os.listdir(flux_dir)) - OWN_FLUX_ENTRIES)
    except OSError:
        return None
    if not foreign:
        return None
    owner = other_flux_distribution(flux_dir)
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return (
        f"{_describe(owner)} installed its own flux package over Flux's ({flux_dir}: {shown}): "
        f"pip uninstall {owner[0] if owner else 'it'}, then pip install --force-reinstall --no-deps {DISTRIBUTION}"
    )


def importable_flux_dir() -> Path | None:
    """The directory ``import flux`` would load now (asking the import system afresh, not ``sys.modules``)."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec("flux", None) if find_spec is not None else None
        if spec is None:
            continue
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            return Path(spec.origin).parent
        locations = list(spec.submodule_search_locations or ())
        return Path(locations[0]) if locations else None
    return None


def other_flux_distribution(flux_dir: Path) -> tuple[str, str] | None:
    """(name, version) of a distribution other than Flux's that installed a top-level ``flux`` package,
    preferring one installed in ``flux_dir``'s parent directory; ``None`` when none is found."""
    import importlib.metadata

    def everywhere():  # every installed distribution's files: read only if the directory holds none
        for name in importlib.metadata.packages_distributions().get("flux", ()):
            yield importlib.metadata.distribution(name)

    beside = importlib.metadata.distributions(path=[str(flux_dir.parent)])
    for dist in itertools.chain(beside, everywhere()):
        name = dist.metadata["Name"] or ""
        if _normalized(name) != DISTRIBUTION and _installs_flux(dist):
            return name, dist.version
    return None


def _installs_flux(dist) -> bool:
    top_level = (dist.read_text("top_level.txt") or "").split()
    return "flux" in top_level or any(file.parts[:1] == ("flux",) for file in dist.files or ())


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _describe(owner: tuple[str, str] | None) -> str:
    return f"{owner[0]} {owner[1]}" if owner else "another distribution"


def version_report() -> str:
    """``flux --version``: Flux's distribution and version, each installed plugin's, and TRL's with the
    range Flux was tested with. Read from package metadata: nothing is imported."""
    import importlib.metadata

    import flux_core
    from flux_core.compat import TESTED_TRL
    from flux_core.plugins import ENTRY_POINT_GROUP, PLUGIN_API_VERSION

    lines = [
        f"{DISTRIBUTION} {flux_core.__version__} (plugin API {PLUGIN_API_VERSION}, Python {sys.version.split()[0]})"
    ]
    plugins = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None:
            plugins.setdefault(entry_point.dist.name, (entry_point.dist.version, []))[1].append(entry_point.name)
    for name, (version, entry_points) in sorted(plugins.items()):
        lines.append(f"  {name} {version} ({', '.join(sorted(entry_points))})")
    if not plugins:
        lines.append("  no plugins installed: pip install flux-dpo (or flux-sft, flux-grpo, ...)")
    try:
        trl_version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        trl_version = "not installed"
    lines.append(f"trl {trl_version} (tested: trl{TESTED_TRL})")
    return "\n".join(lines)
