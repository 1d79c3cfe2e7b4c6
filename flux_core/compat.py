"""What Flux relies on in TRL, checked when a run starts (the TRL canary).

Flux's plugins wrap TRL's trainers, and a few reach past TRL's public API: flux-dpo
overrides the private ``DPOTrainer._precompute_ref_logps``, flux-grpo wraps
``GRPOTrainer._generate_and_score_completions``, both read ``trainer._metrics``. TRL may
change such pieces in any release. Each algorithm therefore lists what it relies on as
:class:`TRLReliance` entries (``Algorithm.trl_relies_on``), and before its runner or
evaluator is imported, :func:`check_trl` looks at the installed TRL:

- a piece is missing or changed (a parameter renamed, a private method TRL no longer
  calls, a metric TRL no longer logs): a one-line :class:`~flux_core.errors.FluxError`
  naming it, the installed TRL and the tested range, before any model loads;
- everything is there but TRL is outside :data:`TESTED_TRL`: one ``UserWarning`` per
  process naming the tested range (the run goes on: numbers may differ from the tested
  versions', and the warning says so);
- a tested TRL with everything there: nothing.

This is why the plugins can require ``trl>=1.16,<2`` rather than pin a minor version: a
TRL release that breaks what Flux relies on is refused in one line instead of being
downgraded by pip or failing mid-run. Nothing here imports TRL until :func:`check_trl`
runs (``flux --help`` and ``flux plugins`` never do).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import CodeType
from typing import Any

from flux_core.errors import FluxError

# The TRL releases Flux's test suite ran against. Outside it the canary still checks every
# relied-on piece, and a run that passes gets one warning naming this range.
TESTED_TRL = ">=1.16,<1.17"


@dataclass(frozen=True)
class TRLReliance:
    """One piece of TRL that an algorithm relies on, checked by :func:`check_trl` when a run starts.

    Attributes:
        target: ``"module:attribute.path"`` of the piece, e.g. ``"trl:DPOTrainer._precompute_ref_logps"``.
        why: what Flux does with it, for the error message (``"flux-dpo overrides it: ..."``).
        parameters: the callable's first parameters, in this order (an override TRL calls positionally).
        keywords: keyword arguments the callable (a class: its constructor) must name in its signature.
        uses: names TRL's code must still contain: for a class, the code of its methods (and of the
            methods it inherits from TRL); for a function, its own code. An attribute TRL sets, a
            private method TRL calls (else an override would silently never run), a dict key or a
            metric name TRL writes.
    """

    target: str
    why: str
    parameters: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        return self.target.replace(":", ".")


_warned_versions: set[str] = set()


def check_trl(reliances: Iterable[TRLReliance], *, owner: str) -> None:
    """Stop in one line if a piece ``owner`` relies on is missing or changed in the installed TRL;
    warn once (per TRL version and process) if TRL is outside :data:`TESTED_TRL` but every piece is there."""
    import trl

    version = str(getattr(trl, "__version__", "unknown"))
    for reliance in reliances:
        problem = find_problem(reliance)
        if problem is not None:
            raise FluxError(
                f"{owner} cannot run on TRL {version}: {problem} ({reliance.why}); "
                f"install a tested TRL: pip install 'trl{TESTED_TRL}'"
            )
    if not is_tested_trl(version) and version not in _warned_versions:
        _warned_versions.add(version)
        warnings.warn(
            f"TRL {version} is outside the versions Flux was tested with (trl{TESTED_TRL}): what {owner} relies on "
            f"in TRL is all there, but results may differ from the tested versions': pip install 'trl{TESTED_TRL}' "
            "to be sure",
            UserWarning,
            stacklevel=2,
        )


def import_trl_experimental(module_name: str, *names: str, owner: str) -> tuple[Any, ...]:
    """``names`` from ``module_name`` under ``trl.experimental``, imported without TRL's experimental notice
    (Flux pins the TRL it was tested with; the notice is for TRL's users, not Flux's).

    A plugin's trainer under ``trl.experimental`` is imported here and nowhere else, so that when TRL
    moves or drops it, the run stops in one line naming the installed TRL and ``owner`` (the plugin's
    distribution) instead of an ImportError from deep inside the plugin.
    """
    import trl
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        try:
            module = importlib.import_module(module_name)
            return tuple(getattr(module, name) for name in names)
        except (ImportError, AttributeError) as error:
            raise FluxError(
                f"{owner} cannot run on TRL {getattr(trl, '__version__', 'unknown')}: it needs "
                f"{', '.join(names)} from {module_name}, which this TRL does not have ({error}); "
                f"install a tested TRL: pip install 'trl{TESTED_TRL}'"
            ) from None


def is_tested_trl(version: str) -> bool:
    """Whether ``version`` is in :data:`TESTED_TRL` (an unparsable version is not)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(TESTED_TRL)
    except InvalidVersion:
        return False


def find_problem(reliance: TRLReliance) -> str | None:
    """What is missing or changed about ``reliance`` in the installed TRL, or None when it holds."""
    name = reliance.display_name
    try:
        target = resolve(reliance.target)
    except AttributeError:
        return f"{name} is missing"
    except ImportError as error:
        return f"{name} cannot be imported: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
    if reliance.parameters or reliance.keywords:
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return f"{name} has no readable signature"
        leading = tuple(parameters)[: len(reliance.parameters)]
        if leading != reliance.parameters:
            return f"{name} takes ({', '.join(parameters)}), not ({', '.join(reliance.parameters)}, ...)"
        named = {key for key, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        missing = [keyword for keyword in reliance.keywords if keyword not in named]
        if missing:
            return f"{name} takes no keyword argument {', '.join(map(repr, missing))}"
    if reliance.uses:
        used = names_in_code(target)
        missing = [use for use in reliance.uses if use not in used]
        if missing:
            return f"TRL's code of {name} no longer uses {', '.join(map(repr, missing))}"
    return None


def resolve(target: str) -> Any:
    """The object ``"module:attribute.path"`` names (attributes looked up on classes, so inherited ones count)."""
    module_name, _, path = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in filter(None, path.split(".")):
        value = getattr(value, part)
    return value


def names_in_code(target: Any) -> set[str]:
    """Every attribute/global name and string constant in ``target``'s code: a function's own, or the
    methods of a class and of its base classes from the same top-level package (TRL's, not transformers')."""
    names: set[str] = set()
    for code in _code_objects(target):
        names.update(code.co_names)
        names.update(_string_constants(code.co_consts))
    return names


def _code_objects(target: Any) -> Iterator[CodeType]:
    if inspect.isclass(target):
        package = target.__module__.split(".")[0]
        for klass in target.__mro__:
            if klass.__module__.split(".")[0] != package:
                continue
            for member in vars(klass).values():
                yield from _code_objects_of_member(member)
    else:
        yield from _code_objects_of_member(target)


def _code_objects_of_member(member: Any) -> Iterator[CodeType]:
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    elif isinstance(member, property):
        for accessor in (member.fget, member.fset, member.fdel):
            yield from _code_objects_of_member(accessor)
        return
    code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
    if code is not None:
        yield from _nested(code)


def _nested(code: CodeType) -> Iterator[CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _nested(constant)


def _string_constants(constants: tuple) -> Iterator[str]:
    for constant in constants:
        if isinstance(constant, str):
            yield constant
        elif isinstance(constant, (tuple, frozenset)):  # `key in {"a", "b"}` compiles to a frozenset constant
            yield from _string_constants(tuple(constant))
