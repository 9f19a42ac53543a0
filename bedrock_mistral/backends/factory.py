"""The one way to make a backend: :func:`create_backend`. The client, server, CLI and batch call it.

A backend is chosen by, in this order:

1. a backend object (``name``, ``complete(request)``, ``stream(request)``): used as is;
2. a built-in name, ``bedrock``, ``local``, ``echo``, or ``openai`` and its presets
   ``ollama``, ``vllm``, ``llamacpp`` (:data:`BUILTIN_BACKENDS`);
3. a name an installed distribution registers in the entry-point group
   ``bedrock_mistral.backends`` (how pytest and llm find plugins);
4. ``package.module:attribute``, imported from ``sys.path`` as it is. Only when no
   installed module has that name is the current directory tried, after everything
   else and for that one import (like uvicorn's ``module:app``): a plugin file next to
   you works, but never shadows an installed package.

The built-ins are declared exactly like an outside backend: pyproject.toml lists the
same ``module:attr`` targets as entry points, so ``importlib.metadata`` tools see them;
the table here is what the factory uses, so they work without installed metadata and
without scanning it.

**The target contract** (what an entry point or ``module:attr`` names):

- a backend object, used as is (the caller's options are ignored);
- or a class or function that returns one. It is called with those of the caller's
  backend options that it names as parameters (every option when it takes
  ``**kwargs``). ``MistralClient`` passes ``region``, ``profile``, ``endpoint_url``,
  ``stream_idle_timeout``, ``model_path`` (``local_model=``) and any extra keyword
  arguments it was given; options left as None are not passed.
- Optional: ``unavailable_reason()`` on the target, returning None when the backend can
  run here, or what is missing and how to install it. ``bedrock-mistral backends``
  shows it, and creating the backend fails with it.

Registering one, in the plugin's pyproject.toml::

    [project.entry-points."bedrock_mistral.backends"]
    mine = "my_package.backend:MyBackend"

>>> create_backend("echo").name
'echo'
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrock_mistral.backends.base import Backend

if TYPE_CHECKING:
    from bedrock_mistral.backends.aio import AsyncBackend
from bedrock_mistral.errors import (
    BackendUnavailableError,
    BedrockMistralError,
    ConfigurationError,
    Fix,
)

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "BackendInfo",
    "create_async_backend",
    "create_backend",
    "list_backends",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bedrock_mistral.backends"
# The same targets pyproject.toml registers under ENTRY_POINT_GROUP (a test keeps them equal).
BUILTIN_BACKENDS: dict[str, str] = {
    "bedrock": "bedrock_mistral.backends.bedrock:BedrockBackend",
    "local": "bedrock_mistral.backends.local:LocalBackend",
    "echo": "bedrock_mistral.backends.echo:EchoBackend",
    "openai": "bedrock_mistral.backends.openai:OpenAIBackend",
    "ollama": "bedrock_mistral.backends.openai:OllamaBackend",
    "vllm": "bedrock_mistral.backends.openai:VLLMBackend",
    "llamacpp": "bedrock_mistral.backends.openai:LlamaCppBackend",
}
_OWN_DISTRIBUTION = "bedrock-mistral"
_REGISTER = Fix(
    f'to add a backend, register it under the entry-point group "{ENTRY_POINT_GROUP}" in its '
    f'package\'s pyproject.toml ([project.entry-points."{ENTRY_POINT_GROUP}"] NAME = '
    '"package.module:Backend") and pip install it, or pass package.module:attribute'
)


@dataclass(frozen=True)
class BackendInfo:
    """One backend that can be named: where it comes from, and whether it runs here."""

    name: str
    target: str  # "package.module:attribute"
    source: str  # "built-in", or "entry point (dist version)"
    problem: str | None = None  # None: usable here; else what is missing and how to fix it

    @property
    def usable(self) -> bool:
        return self.problem is None


# -- finding targets ---------------------------------------------------------------------


def _plugin_entry_points() -> Iterator[importlib.metadata.EntryPoint]:
    """Entry points of other distributions (ours are the built-ins, listed in code)."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point, "dist", None)
        if dist is not None and dist.name == _OWN_DISTRIBUTION:
            continue
        yield point


def _source(point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"entry point ({dist.name} {dist.version})" if dist is not None else "entry point"


def _import_module(module_name: str) -> Any:
    """Import ``module_name`` from sys.path; the current directory only as a last resort."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        top = module_name.partition(".")[0]
        cwd = os.getcwd()
        if err.name not in (top, module_name) or cwd in sys.path or "" in sys.path:
            raise
    # Appended, not prepended, and only for this import: an installed package always wins,
    # and later imports (torch, sentencepiece...) never pick up a stray file from here.
    sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def _load_target(target: str, *, what: str) -> Any:
    """The object ``package.module:attribute`` names; one readable line when that fails."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"{what}: {target!r} is not a package.module:attribute spec", fix=_REGISTER
        )
    try:
        obj: Any = _import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except ModuleNotFoundError as err:
        raise BackendUnavailableError(
            f"{what} cannot be loaded: no module named {err.name!r} "
            "(is the package that provides it installed in this environment?)"
        ) from err
    except AttributeError as err:
        raise ConfigurationError(
            f"{what} cannot be loaded: module {module_name!r} has no attribute {attribute!r}"
        ) from err
    except Exception as err:  # a broken plugin: any error while importing it
        raise BackendUnavailableError(
            f"{what} cannot be loaded: importing {module_name!r} raised {type(err).__name__}: {err}"
        ) from err
    return obj


def _resolve(spec: str) -> tuple[Any, str]:
    """(target object, description for messages) for a name or a module:attr spec."""
    if ":" in spec:
        return _load_target(spec, what=f"backend {spec!r}"), f"backend {spec!r}"
    name = spec.strip().lower()
    builtin = BUILTIN_BACKENDS.get(name)
    if builtin is not None:
        return _load_target(builtin, what=f"built-in backend {name!r}"), f"backend {name!r}"
    for point in _plugin_entry_points():
        if point.name.lower() == name:
            what = f"backend {name!r} ({point.value}, {_source(point)})"
            return _load_target(point.value, what=what), what
    raise ConfigurationError(
        f"backend={spec!r} is not allowed: no backend of that name is installed "
        f"(installed: {', '.join(info.name for info in list_backends(check=False))}).",
        fix=_REGISTER,
    )


# -- building ------------------------------------------------------------------------------


def _is_factory(target: Any) -> bool:
    # A class passes the Protocol's attribute check, so test for it first.
    return isinstance(target, type) or (callable(target) and not isinstance(target, Backend))


def _accepted(target: Any) -> frozenset[str] | None:
    """Keyword options ``target`` can be called with; None when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters if p.kind in kinds)


@functools.lru_cache(maxsize=1)
def _builtin_options() -> frozenset[str]:
    """Every option some built-in accepts: passing one to another backend is not a typo."""
    names: set[str] = set()
    for target in BUILTIN_BACKENDS.values():
        accepted = _accepted(_load_target(target, what="built-in backend"))
        names |= accepted or frozenset()
    return frozenset(names)


def _unavailable(target: Any) -> str | None:
    check = getattr(target, "unavailable_reason", None)
    return check() if callable(check) else None


def _call(target: Any, what: str, options: dict[str, Any]) -> Any:
    try:
        return target(**options)
    except BedrockMistralError:
        raise
    except Exception as err:  # a plugin's own bug: one readable line, the traceback chained
        raise BackendUnavailableError(
            f"{what} failed to start: {type(err).__name__}: {err}"
        ) from err


def _build(target: Any, what: str, options: Mapping[str, Any]) -> Backend:
    given = {key: value for key, value in options.items() if value is not None}
    if not _is_factory(target):
        if given:
            logger.debug("%s is an object; it ignores option(s) %s", what, ", ".join(given))
        backend = target
    else:
        problem = _unavailable(target)
        if problem:
            raise BackendUnavailableError(f"{what} cannot run here: {problem}")
        accepted = _accepted(target)
        unknown = sorted(set(given) - _builtin_options() - (accepted or set(given)))
        if unknown:
            raise ConfigurationError(
                f"unknown backend option(s) {', '.join(unknown)}; {what} accepts "
                f"{', '.join(sorted(accepted or ())) or 'no options'}"
            )
        chosen = given if accepted is None else {k: v for k, v in given.items() if k in accepted}
        ignored = sorted(set(given) - set(chosen))
        if ignored:
            logger.debug("%s ignores option(s) %s", what, ", ".join(ignored))
        backend = _call(target, what, chosen)
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            f"{what} is not a backend: it needs name, complete(request) and stream(request)"
        )
    return backend


def create_backend(spec: str | Backend, options: Mapping[str, Any] | None = None) -> Backend:
    """The backend ``spec`` names (see the module docstring), built with ``options``.

    Options that another built-in backend accepts are ignored (so switching backend
    stays a one-argument change); options no backend knows are an error. None values
    count as not given.

    >>> create_backend("bedrock", {"region": "eu-west-3", "model_path": None}).name
    'bedrock'
    """
    options = options or {}
    if isinstance(spec, str):
        target, what = _resolve(spec)
        return _build(target, what, options)
    if isinstance(spec, Backend) and not isinstance(spec, type):
        return _build(spec, f"backend object {type(spec).__name__}", options)
    raise ConfigurationError(
        f"backend={spec!r} is not allowed: a name ({', '.join(BUILTIN_BACKENDS)}, or one "
        "registered as an entry point), package.module:attribute, or an object with name, "
        "complete(request) and stream(request)"
    )


def create_async_backend(
    spec: str | Backend | AsyncBackend, options: Mapping[str, Any] | None = None
) -> AsyncBackend:
    """The asyncio face of what :func:`create_backend` makes (``AsyncMistralClient`` uses it).

    An async backend object (``async def complete``) is used as is; anything else is
    made by :func:`create_backend` and adapted by
    :func:`~bedrock_mistral.backends.aio.to_async` (native Bedrock over httpx, echo on the
    loop, the local model in its worker thread, other backends in worker threads).
    """
    from bedrock_mistral.backends.aio import is_async_backend, to_async

    if is_async_backend(spec):
        return spec  # type: ignore[return-value]
    return to_async(create_backend(spec, options))  # type: ignore[arg-type]


# -- listing -------------------------------------------------------------------------------


def _info(name: str, target: str, source: str, *, check: bool) -> BackendInfo:
    if not check:
        return BackendInfo(name, target, source)
    try:
        problem = _unavailable(_load_target(target, what=f"backend {name!r}"))
    except ConfigurationError as err:  # BackendUnavailableError included
        problem = str(err)
    return BackendInfo(name, target, source, problem)


def list_backends(*, check: bool = True) -> list[BackendInfo]:
    """The built-ins, then every installed entry point, by name.

    ``check=True`` imports each target to say whether it can run here (a broken plugin
    shows its one-line error rather than failing the listing). An entry point that
    reuses a built-in's name is listed with a note: the built-in wins.
    """
    infos = [_info(n, t, "built-in", check=check) for n, t in BUILTIN_BACKENDS.items()]
    seen = set(BUILTIN_BACKENDS)
    for point in sorted(_plugin_entry_points(), key=lambda p: p.name):
        info = _info(point.name, point.value, _source(point), check=check)
        if point.name in seen:
            shadowed = f"shadowed: the {point.name!r} listed first is the one used"
            info = BackendInfo(info.name, info.target, info.source, shadowed)
        seen.add(point.name)
        infos.append(info)
    return infos
