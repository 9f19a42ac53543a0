"""CLI settings: flags, then environment, then ``config.toml``, then built-in defaults.

The file lives at ``$XDG_CONFIG_HOME/bedrock-mistral/config.toml`` and is small and flat::

    model = "mixtral-8x7b"
    backend = "bedrock"
    region = "us-east-1"

    [params]
    temperature = 0.3
    max_tokens = 400

Every resolved value remembers where it came from, so ``config show`` can say why a
setting has the value it has.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedrock_mistral.cli.fsutil import atomic_write_text, config_dir
from bedrock_mistral.errors import ConfigurationError, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN_BACKENDS",
    "ENV_VARS",
    "PARAM_KEYS",
    "SETTING_KEYS",
    "ConfigFile",
    "Settings",
    "config_path",
    "dump_toml",
    "load_config",
    "parse_param",
    "parse_setting",
    "resolve_settings",
    "save_config",
]

BUILTIN_BACKENDS = ("bedrock", "local", "echo")
DEFAULT_MODEL = (
    "mistral-7b"  # mirrors bedrock_mistral.models.DEFAULT_MODEL without importing pydantic
)
DEFAULT_BACKEND = "bedrock"

# Plugin backends: "package.module:attribute", or a name registered as an entry point.
_PLUGIN_BACKEND = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

SETTING_KEYS: dict[str, str] = {
    "model": "default model alias or Bedrock model id",
    "backend": "bedrock, local, echo, a plugin's name, or package.module:attribute",
    "region": "AWS region for Bedrock",
    "profile": "AWS profile name",
    "endpoint_url": "Bedrock runtime endpoint (e.g. a local `bedrock-mistral serve`)",
    "local_model": "directory of local model weights (default: the bundled model)",
}
PARAM_KEYS: dict[str, str] = {
    "max_tokens": "most tokens to generate (integer >= 1)",
    "temperature": "randomness, 0 to 1",
    "top_p": "nucleus sampling mass, 0 to 1",
    "top_k": "sample among the k likeliest tokens, 1 to 200",
    "stop": "stop sequences (comma-separated, or a JSON/TOML list)",
}
# Setting -> environment variables, first one set wins.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "model": ("BEDROCK_MISTRAL_MODEL",),
    "backend": ("BEDROCK_MISTRAL_BACKEND",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "profile": ("AWS_PROFILE",),
    "endpoint_url": ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"),
    "local_model": ("BEDROCK_MISTRAL_LOCAL_MODEL",),
}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / "config.toml"


# --- parsing and checking single values -------------------------------------------------


def _check_backend(value: str) -> str:
    if value in BUILTIN_BACKENDS or _PLUGIN_BACKEND.match(value):
        return value
    from bedrock_mistral.backends.factory import list_backends

    if value.strip().lower() in {info.name.lower() for info in list_backends(check=False)}:
        return value
    raise ValidationError.out_of_range(
        "backend",
        value,
        "bedrock, local, echo, a plugin's name (see `bedrock-mistral backends`), "
        "or package.module:attribute",
    )


def _check_model(value: str) -> str:
    from bedrock_mistral.models import resolve_model

    resolve_model(value)  # raises ValidationError listing the known aliases
    return value.strip()


def _check_text(name: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.strip():
            raise ValidationError.out_of_range(name, value, "a non-empty string")
        return value.strip()

    return check


_SETTING_CHECKS: dict[str, Callable[[str], str]] = {
    "model": _check_model,
    "backend": _check_backend,
    "region": _check_text("region"),
    "profile": _check_text("profile"),
    "endpoint_url": _check_text("endpoint_url"),
    "local_model": _check_text("local_model"),
}


def parse_setting(key: str, value: Any) -> str:
    """Check a top-level setting; raises ValidationError naming the key."""
    if key not in SETTING_KEYS:
        raise ValidationError.out_of_range(
            "key", key, "one of " + ", ".join([*SETTING_KEYS, *PARAM_KEYS])
        )
    if not isinstance(value, str):
        raise ValidationError.out_of_range(key, value, "a string")
    return _SETTING_CHECKS[key](value)


def _parse_stop(value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except ValueError as err:
                raise ValidationError.out_of_range(
                    "stop", value, 'a list like ["###", "END"]'
                ) from err
        else:
            value = [part for part in value.split(",") if part]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError.out_of_range("stop", value, "a list of non-empty strings")
    if len(value) > 10:
        raise ValidationError.out_of_range("stop", value, "at most 10 stop sequences")
    return list(value)


def _parse_number(key: str, value: Any, *, integer: bool, low: float, high: float) -> int | float:
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} from {low:g} to {high:g}" if high != math.inf else f"{kind} >= {low:g}"
    given = value
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError as err:
            raise ValidationError.out_of_range(key, value, allowed) from err
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError.out_of_range(key, value, allowed)
    if integer and not isinstance(value, int):
        raise ValidationError.out_of_range(key, value, allowed)
    if math.isnan(value) or not low <= value <= high:
        raise ValidationError.out_of_range(key, given, allowed)
    return value if integer else float(value)


def parse_param(key: str, value: Any) -> Any:
    """Turn a generation parameter given as text (or TOML value) into its typed value.

    Bounds here are the ones every model shares; per-model limits (max_tokens, top_k on
    chat models) are checked by the SDK when the request is built.
    """
    if key == "max_tokens":
        return _parse_number(key, value, integer=True, low=1, high=math.inf)
    if key in ("temperature", "top_p"):
        return _parse_number(key, value, integer=False, low=0.0, high=1.0)
    if key == "top_k":
        return _parse_number(key, value, integer=True, low=1, high=200)
    if key == "stop":
        return _parse_stop(value)
    raise ValidationError.out_of_range("parameter", key, "one of " + ", ".join(PARAM_KEYS))


# --- the file ----------------------------------------------------------------------------


@dataclass
class ConfigFile:
    """What ``config.toml`` holds; ``warnings`` lists keys that were ignored.

    Ignored entries are kept in ``extra`` / ``extra_params`` and written back unchanged,
    so ``config set`` never deletes what a user (or a newer version) put in the file.
    """

    path: Path
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.path.exists()


def load_config(path: Path | None = None) -> ConfigFile:
    """Read the config file; a missing file is an empty config, a broken one an error."""
    path = path or config_path()
    config = ConfigFile(path=path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return config
    except OSError as err:
        raise ConfigurationError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigurationError(
            f"config file {path} is not valid TOML ({err}); fix it or delete it"
        ) from err
    for key, value in data.items():
        if key == "params" and isinstance(value, dict):
            for name, item in value.items():
                _load_one(
                    config,
                    name,
                    item,
                    config.params,
                    config.extra_params,
                    parse_param,
                    prefix="params.",
                )
        elif key == "params":
            config.warnings.append(f"{path}: ignored params: it must be a table ([params])")
        else:
            _load_one(config, key, value, config.settings, config.extra, parse_setting, prefix="")
    return config


def _load_one(
    config: ConfigFile,
    key: str,
    value: Any,
    into: dict[str, Any],
    extra: dict[str, Any],
    parse: Callable[[str, Any], Any],
    *,
    prefix: str,
) -> None:
    try:
        into[key] = parse(key, value)
    except ValidationError as err:
        extra[key] = value
        config.warnings.append(f"{config.path}: ignored {prefix}{key}: {err}")


def save_config(config: ConfigFile) -> None:
    """Write the file atomically; set keys replace ignored entries of the same name."""
    extra = {k: v for k, v in config.extra.items() if k not in config.settings}
    extra_params = {k: v for k, v in config.extra_params.items() if k not in config.params}
    atomic_write_text(config.path, dump_toml(config.settings, config.params, extra, extra_params))


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def dump_toml(
    settings: Mapping[str, Any],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> str:
    """The small, flat TOML this CLI writes: top-level settings and a ``[params]`` table.

    ``extra`` entries (kept from the file as they were) are written after ours; a value
    TOML cannot hold in this flat form (a nested table, a date) is left out.
    """
    lines = [
        "# bedrock-mistral settings; edit freely or use `bedrock-mistral config set KEY VALUE`."
    ]
    lines += [f"{key} = {_toml_value(settings[key])}" for key in SETTING_KEYS if key in settings]
    lines += _extra_lines(extra or {})
    param_lines = [f"{key} = {_toml_value(params[key])}" for key in PARAM_KEYS if key in params]
    param_lines += _extra_lines(extra_params or {})
    if param_lines:
        lines += ["", "[params]", *param_lines]
    return "\n".join(lines) + "\n"


def _extra_lines(extra: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in extra.items():
        try:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        except TypeError:
            continue
    return lines


# --- precedence --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The effective settings of one command, each with its source."""

    model: str
    backend: str
    region: str | None
    profile: str | None
    endpoint_url: str | None
    local_model: str | None
    params: dict[str, Any]
    sources: dict[str, str]

    def replace(self, **changes: Any) -> Settings:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        sources = dict(self.sources)
        for key in changes:
            sources[key] = "changed in session"
        values.update(changes, sources=sources)
        return Settings(**values)


def resolve_settings(
    flags: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    config: ConfigFile | None = None,
) -> Settings:
    """Merge flags (None means not given), environment and the config file.

    ``flags`` may hold any setting key and ``params`` (a dict of generation parameters).
    Parameters merge key by key: a flag's ``temperature`` overrides the file's and
    leaves the file's ``max_tokens`` in place.
    """
    env = os.environ if env is None else env
    config = config if config is not None else load_config(config_path(env))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    defaults = {"model": DEFAULT_MODEL, "backend": DEFAULT_BACKEND}
    for key in SETTING_KEYS:
        value, source = _pick(key, flags.get(key), env, config)
        if value is None and key in defaults:
            value, source = defaults[key], "default"
        values[key] = value
        sources[key] = source
    values["backend"] = _check_backend(values["backend"])
    params: dict[str, Any] = {}
    for key, value in config.params.items():
        params[key] = value
        sources[f"params.{key}"] = "config file"
    for key, value in (flags.get("params") or {}).items():
        params[key] = value
        sources[f"params.{key}"] = "flag"
    return Settings(params=params, sources=sources, **values)


def _pick(key: str, flag: Any, env: Mapping[str, str], config: ConfigFile) -> tuple[Any, str]:
    if flag is not None:
        return flag, "flag"
    ignore_env = (
        key == "endpoint_url"
        and env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    )
    for variable in () if ignore_env else ENV_VARS[key]:
        value = env.get(variable, "").strip()
        if value:
            return value, f"env {variable}"
    if key in config.settings:
        return config.settings[key], "config file"
    return None, "unset"
