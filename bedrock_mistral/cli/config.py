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

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from bedrock_mistral.cli.fsutil import atomic_write_text, config_dir
from bedrock_mistral.errors import ConfigurationError, ValidationError
from bedrock_mistral.validation import PARAMS, check_device, parse_param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN_BACKENDS",
    "ENV_VARS",
    "PARAM_KEYS",
    "SECRET_KEYS",
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

BUILTIN_BACKENDS = ("bedrock", "local", "echo", "openai", "ollama", "vllm", "llamacpp")
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
    "quantize": "int8 or int4: quantise the local model's weights as it loads",
    "device": "cpu or cuda[:N]: where the local model runs (default: cuda when available)",
    "base_url": "URL of an OpenAI-compatible engine, e.g. http://localhost:8000/v1",
    "api_key": "key for that engine (sent as a bearer token)",
    "prompt_mode": "chat (the engine's template) or raw (our [INST] prompt)",
}
# Kept out of `config show` and the like: shown masked.
SECRET_KEYS = frozenset({"api_key"})
# The generation parameters and their help, from the one table of parameter rules.
PARAM_KEYS: dict[str, str] = {name: spec.help for name, spec in PARAMS.items()}
# (parse_param, imported above, checks them by the SDK's own rules and messages.)
# Setting -> environment variables, first one set wins.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "model": ("BEDROCK_MISTRAL_MODEL",),
    "backend": ("BEDROCK_MISTRAL_BACKEND",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "profile": ("AWS_PROFILE",),
    "endpoint_url": ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"),
    "local_model": ("BEDROCK_MISTRAL_LOCAL_MODEL",),
    "quantize": ("BEDROCK_MISTRAL_LOCAL_QUANTIZE",),
    "device": ("BEDROCK_MISTRAL_LOCAL_DEVICE",),
    "base_url": ("BEDROCK_MISTRAL_BASE_URL",),
    "api_key": ("BEDROCK_MISTRAL_OPENAI_API_KEY",),
    "prompt_mode": ("BEDROCK_MISTRAL_PROMPT_MODE",),
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


def _check_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError.out_of_range(
            "base_url", value, "an http(s) URL, e.g. http://localhost:8000/v1"
        )
    return value.strip()


def _check_quantize(value: str) -> str:
    if value.strip() not in ("int8", "int4"):
        raise ValidationError.out_of_range("quantize", value, "int8 or int4")
    return value.strip()


def _check_prompt_mode(value: str) -> str:
    if value.strip() not in ("chat", "raw"):
        raise ValidationError.out_of_range("prompt_mode", value, "chat or raw")
    return value.strip()


_SETTING_CHECKS: dict[str, Callable[[str], str]] = {
    "model": _check_model,
    "backend": _check_backend,
    "region": _check_text("region"),
    "profile": _check_text("profile"),
    "endpoint_url": _check_text("endpoint_url"),
    "local_model": _check_text("local_model"),
    "quantize": _check_quantize,
    "device": check_device,
    "base_url": _check_url,
    "api_key": _check_text("api_key"),
    "prompt_mode": _check_prompt_mode,
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


def dump_toml(
    settings: Mapping[str, Any],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> str:
    """The small, flat TOML this CLI writes: top-level settings and a ``[params]`` table.

    ``extra`` entries (kept from the file as they were) are written after ours; a value
    this flat form cannot hold (a nested table) is left out.
    """
    top = {key: settings[key] for key in SETTING_KEYS if key in settings}
    top.update(_flat(extra or {}))
    table = {key: params[key] for key in PARAM_KEYS if key in params}
    table.update(_flat(extra_params or {}))
    data: dict[str, Any] = {**top, "params": table} if table else top
    return _HEADER + tomli_w.dumps(data)


_HEADER = "# bedrock-mistral settings; edit freely or use `bedrock-mistral config set KEY VALUE`.\n"


def _flat(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Entries that are plain values (not tables), so the file keeps one ``[params]`` table."""
    return {key: value for key, value in extra.items() if not isinstance(value, dict)}


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
    base_url: str | None = None
    api_key: str | None = None
    prompt_mode: str | None = None
    quantize: str | None = None
    device: str | None = None

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
    for key in ("base_url", "prompt_mode"):  # typos here would only fail at the first call
        if values[key] is not None:
            values[key] = _SETTING_CHECKS[key](values[key])
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
