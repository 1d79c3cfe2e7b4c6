"""The names of a run's files are spelled in one module, :mod:`flux_core.run.layout`.

Every other product module (flux_core/, flux/, flux_plugins/*/flux_*/) imports them
from there (plugins through ``flux_core``). The meta-test below parses each module and
fails on a string literal that spells one of layout's names again. Docstrings may name
files freely (they are prose), and so may help texts and messages; what is refused is
a literal used as the name:

* a distinctive name (``metrics.jsonl``, ``ppo_state``, ``checkpoint-``...) as a whole
  literal, or as a glob of one (``"checkpoint-*"``);
* a name prefix (ending in ``-``) right before an f-string placeholder
  (``f"checkpoint-{step}"``);
* the staged / aside infix of ``.NAME.tmp-PID`` and ``.NAME.old-PID``;
* a plain word (``best``, ``adapter``...) only where it is a path: an operand of ``/``
  or an argument of ``Path``, ``joinpath``, ``with_name``, ``glob`` (elsewhere ``"best"``
  is a metadata key and ``"adapter"`` a reference policy).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from flux_core.run import layout

ROOT = Path(__file__).resolve().parents[2]
LAYOUT_MODULE = ROOT / "flux_core" / "run" / "layout.py"

# Literals a module still types while its owner rewrites it: path -> names. Each entry
# must still be needed (test_pending_entries_are_still_needed), so fixing the module
# means deleting its entry here.
PENDING: dict[str, set[str]] = {}

PATH_CALLS = {"Path", "PurePath", "joinpath", "with_name", "glob", "rglob"}


def layout_names() -> set[str]:
    """Every file or folder name layout defines (its upper-case string constants)."""
    return {value for name, value in vars(layout).items() if name.isupper() and isinstance(value, str)}


def product_modules() -> list[Path]:
    roots = [ROOT / "flux_core", ROOT / "flux", *sorted((ROOT / "flux_plugins").glob("*/flux_*"))]
    return sorted(path for root in roots for path in root.rglob("*.py") if path != LAYOUT_MODULE)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _path_operands(tree: ast.AST) -> set[int]:
    """The string constants used as path parts."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found.update(id(side) for side in (node.left, node.right) if isinstance(side, ast.Constant))
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called in PATH_CALLS:
                found.update(id(arg) for arg in node.args if isinstance(arg, ast.Constant))
    return found


def _before_placeholder(tree: ast.AST) -> set[int]:
    """The f-string parts right before a ``{...}``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for part, following in zip(node.values, node.values[1:]):
                if isinstance(part, ast.Constant) and isinstance(following, ast.FormattedValue):
                    found.add(id(part))
    return found


def typed_names(source: str) -> set[str]:
    """The layout names ``source`` spells as string literals (see the module docstring)."""
    names = layout_names()
    plain = {name for name in names if name.isalpha()}
    distinctive = names - plain
    prefixes = {name for name in distinctive if name.endswith("-")}
    infixes = {f".{tag}-": tag for tag in (layout.STAGED_TAG, layout.ASIDE_TAG)}
    tree = ast.parse(source)
    docstrings, path_parts, before_placeholder = _docstrings(tree), _path_operands(tree), _before_placeholder(tree)
    typed = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        bare = text.strip("*/")
        typed.update(name for name in distinctive if bare == name)
        if id(node) in before_placeholder:
            typed.update(prefix for prefix in prefixes if text.endswith(prefix))
        typed.update(tag for infix, tag in infixes.items() if infix in text)
        if id(node) in path_parts:
            typed.update(name for name in plain if bare == name)
    return typed


def test_layout_names_every_file_a_run_writes():
    assert {
        "metrics.jsonl",
        "flux_state.json",
        "flux_config.yaml",
        "flux_checkpoint.json",
        "adapter",
        "best",
        "final",
        "checkpoint-",
        ".flux.lock",
        "eval.json",
        "metrics.png",
        "ppo_state",
        "sglang_weights",
        "README.md",
        "flux-eval-",
    } <= layout_names()


@pytest.mark.parametrize(
    "source, expected",
    [
        ('path = output_dir / "metrics.jsonl"', {"metrics.jsonl"}),
        ('CONFIG = "flux_config.yaml"', {"flux_config.yaml"}),
        ('paths = output_dir.glob("checkpoint-*")', {"checkpoint-"}),
        ('name = f"checkpoint-{step}"', {"checkpoint-"}),
        ('message = f"step {step}; checkpoint-{step} holds the run"', {"checkpoint-"}),
        ('staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")', {"tmp"}),
        ('best = output_dir / "best"', {"best"}),
        ('best = Path(output_dir, "final")', {"final"}),
        ('tempfile.TemporaryDirectory(prefix="flux-eval-")', {"flux-eval-"}),
        # not names: a docstring, prose, a metadata key, a reference policy, matplotlib's legend place
        ('def f():\n    """Writes metrics.jsonl and checkpoint-N."""', set()),
        ('help = "replace checkpoint-N/, best/ and metrics.jsonl"', set()),
        ('meta = {"best": True}', set()),
        ('if policy == "adapter": pass', set()),
        ('axis.legend(loc="best")', set()),
    ],
)
def test_the_check_finds_typed_names(source, expected):
    assert typed_names(source) == expected


def test_no_product_module_types_a_layout_name():
    offenders = []
    for path in product_modules():
        relative = path.relative_to(ROOT).as_posix()
        typed = typed_names(path.read_text()) - PENDING.get(relative, set())
        if typed:
            offenders.append(f"{relative}: {', '.join(sorted(typed))}")
    assert not offenders, (
        "these modules spell a run's file names again; import them from flux_core.run.layout "
        "(plugins: from flux_core):\n" + "\n".join(offenders)
    )


def test_pending_entries_are_still_needed():
    stale = []
    for relative, names in sorted(PENDING.items()):
        path = ROOT / relative
        typed = typed_names(path.read_text()) if path.exists() else set()
        stale += [f"{relative}: {name}" for name in sorted(names - typed)]
    assert not stale, f"no longer typed; remove from PENDING in {__file__}:\n" + "\n".join(stale)


def test_checkpoint_names_round_trip():
    assert layout.checkpoint_name(12) == "checkpoint-12"
    assert layout.checkpoint_step(Path("out") / "checkpoint-12") == 12
    assert layout.checkpoint_step("checkpoint-12") == 12
    for name in ("checkpoint-", "checkpoint-1x", "best", "checkpoint-12.old"):
        assert layout.checkpoint_step(name) is None


def test_staged_and_aside_names_are_leftovers():
    target = Path("out") / "best"
    for path, kind in ((layout.staged_path(target), "tmp"), (layout.aside_path(target), "old")):
        assert path.parent == target.parent
        match = layout.LEFTOVER_NAME.match(path.name)
        assert match and match.group("name") == "best" and match.group("kind") == kind
        assert match.group("pid") == str(os.getpid())
    assert Path(layout.aside_path(target).name).match(layout.aside_pattern("best"))


def test_reference_cache_file():
    assert layout.reference_cache_file("out", "abc") == Path("out") / ".flux-cache" / "ref-logps-abc.pt"
