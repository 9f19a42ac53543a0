"""``bedrock-mistral doctor``: what works, what does not, and how to fix it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import click

from bedrock_mistral.cli.config import Settings
from bedrock_mistral.cli.options import client_options, current_env, settings_from

if TYPE_CHECKING:
    from bedrock_mistral.cli.env import Env

__all__ = ["Finding", "doctor", "local_model_dir"]

Status = Literal["ok", "warn", "fail", "info"]
_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "info": ("·", "cyan")}


@dataclass(frozen=True)
class Finding:
    status: Status
    title: str
    detail: str
    fix: str = ""


def local_model_dir(settings: Settings) -> Path | None:
    """The configured local weights, else the bundled ``local_backend/weights``."""
    if settings.local_model:
        return Path(settings.local_model).expanduser()
    spec = importlib.util.find_spec("local_backend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


def check_config(settings: Settings) -> Iterator[Finding]:
    from bedrock_mistral.cli.config import config_path, load_config

    path = config_path()
    config = load_config(path)
    if not config.exists:
        yield Finding("info", "config", f"no config file ({path}); defaults apply")
    elif config.warnings:
        yield Finding(
            "warn",
            "config",
            "; ".join(config.warnings),
            f"edit {path} or use `bedrock-mistral config set`",
        )
    else:
        yield Finding("ok", "config", str(path))
    source = settings.sources
    yield Finding(
        "info",
        "settings",
        f"model {settings.model} ({source['model']}), "
        f"backend {settings.backend} ({source['backend']})",
    )


def check_backends(settings: Settings) -> Iterator[Finding]:
    """One line for what can run here; one per backend that cannot, with its fix."""
    from bedrock_mistral.backends.factory import list_backends

    infos = list_backends()
    ready = [info.name for info in infos if info.usable]
    plugins = sum(info.source != "built-in" for info in infos)
    extra = f" ({plugins} from plugins)" if plugins else ""
    yield Finding(
        "ok" if ready else "warn",
        "backends",
        f"{', '.join(ready) or 'none'} ready{extra}; `bedrock-mistral backends` lists them",
    )
    for info in infos:
        if info.problem is not None:
            needed: Status = "fail" if info.name == settings.backend else "warn"
            yield Finding(needed, "backends", f"{info.name} ({info.source}): {info.problem}")


def check_aws(settings: Settings) -> Iterator[Finding]:
    from bedrock_mistral.cli.access import aws_setup

    needed: Status = "fail" if settings.backend == "bedrock" else "warn"
    setup = aws_setup(settings)
    if setup.problem:
        yield Finding(
            needed, "credentials", setup.problem, "fix the AWS profile, or use --backend local"
        )
    elif setup.credential_source is None:
        yield Finding(
            needed,
            "credentials",
            "no AWS credentials found",
            "run `aws configure` (or `aws sso login`), set AWS_PROFILE, "
            "or use --backend local to run offline",
        )
    else:
        profile = f", profile {settings.profile}" if settings.profile else ""
        yield Finding("ok", "credentials", f"found ({setup.credential_source}{profile})")
    if setup.region:
        yield Finding(
            "ok", "region", setup.region + ("" if settings.region else " (from the AWS profile)")
        )
    else:
        yield Finding(
            needed,
            "region",
            "no AWS region",
            "pass --region, set AWS_REGION, or `bedrock-mistral config set region us-east-1`",
        )
    yield from check_endpoint(settings, setup.region)


def check_endpoint(settings: Settings, region: str | None) -> Iterator[Finding]:
    url = settings.endpoint_url or (
        f"https://bedrock-runtime.{region}.amazonaws.com" if region else None
    )
    if url is None:
        return
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        yield Finding(
            "fail", "endpoint", f"{url} is not a URL", "use a URL like http://127.0.0.1:8000"
        )
        return
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as err:
        yield Finding(
            "fail" if settings.backend == "bedrock" else "warn",
            "endpoint",
            f"cannot reach {url}: {err.strerror or err}",
            "check the network or proxy"
            + ("" if settings.endpoint_url else ", or use --backend local offline")
            + (" (is `bedrock-mistral serve` running?)" if settings.endpoint_url else ""),
        )
        return
    where = f" ({settings.sources.get('endpoint_url')})" if settings.endpoint_url else ""
    yield Finding(
        "ok", "endpoint", f"{url}{where} answers in {(time.monotonic() - started) * 1000:.0f} ms"
    )


def check_model_access(settings: Settings, invoke: bool) -> Iterator[Finding]:
    from bedrock_mistral.backends.openai_presets import is_engine_backend
    from bedrock_mistral.cli.access import check_access
    from bedrock_mistral.models import resolve_model

    if is_engine_backend(settings.backend):  # no Bedrock model access involved
        yield from check_engine(settings, invoke)
        return

    spec = resolve_model(settings.model)
    report = check_access(settings)
    if not report.checked:
        listing_failed = (report.note or "").startswith("ListFoundationModels failed")
        fix = (
            "check the network and that you may call bedrock:ListFoundationModels (control "
            "plane: AWS_ENDPOINT_URL_BEDROCK); a local `bedrock-mistral serve` needs no access"
            if listing_failed
            else "fix the findings above first"
        )
        yield Finding("warn", "model access", f"not checked: {report.note}", fix)
    else:
        status = report.status.get(spec.canonical_id, "not offered in this region")
        good = status == "enabled"
        yield Finding(
            "ok" if good else ("fail" if settings.backend == "bedrock" else "warn"),
            "model access",
            f"{spec.alias} ({spec.canonical_id}): {status}",
            ""
            if good
            else "enable it in the Bedrock console (Model access), or pick another region/model",
        )
    if invoke:
        yield _invoke_once(settings)


def check_engine(settings: Settings, invoke: bool) -> Iterator[Finding]:
    """An OpenAI-compatible engine: does its URL answer, what does it serve, is our model there."""
    from bedrock_mistral.cli.clients import make_client
    from bedrock_mistral.cli.exits import describe
    from bedrock_mistral.errors import BedrockMistralError

    started = time.monotonic()
    try:
        with make_client(settings, max_attempts=1) as client:
            backend: Any = client.backend
            served = backend.list_models()
            wanted = backend.engine_name(client.model)
    except BedrockMistralError as err:
        yield Finding("fail", "engine", describe(err)[1])
        return
    elapsed = (time.monotonic() - started) * 1000
    yield Finding(
        "ok",
        "engine",
        f"{backend.base_url} answers in {elapsed:.0f} ms; it serves "
        f"{', '.join(served) or 'no models'}",
    )
    if wanted in served or not served:
        yield Finding("ok" if served else "warn", "model", f"{wanted} ({settings.model})")
    else:
        yield Finding(
            "fail",
            "model",
            f"{wanted} is not among the models the engine serves",
            f"pick one of them with -m (or `bedrock-mistral models --backend {settings.backend}`)",
        )
    if invoke:
        yield _invoke_once(settings)


def _invoke_once(settings: Settings) -> Finding:
    from bedrock_mistral.cli.clients import make_client
    from bedrock_mistral.cli.exits import describe
    from bedrock_mistral.errors import BedrockMistralError

    try:
        with make_client(settings) as client:
            reply = client.chat([{"role": "user", "content": "Say OK."}], max_tokens=1)
    except BedrockMistralError as err:
        return Finding("fail", "test call", describe(err)[1])
    return Finding("ok", "test call", f"{reply.model_id} answered in {reply.latency_ms:.0f} ms")


def check_local(settings: Settings) -> Iterator[Finding]:
    needed: Status = "fail" if settings.backend == "local" else "warn"
    path = local_model_dir(settings)
    files = sorted(p.name for p in path.iterdir()) if path and path.is_dir() else []
    weights = [f for f in files if f.endswith(".safetensors")]
    has_config = "config.json" in files or "params.json" in files
    if path is None or not weights or not has_config:
        where = path or "local_backend/weights"
        if path is None or not path.is_dir():
            missing = "no such folder"
        elif not files:
            missing = "empty folder"
        else:
            missing = "no *.safetensors" if not weights else "no config.json or params.json"
        yield Finding(
            needed,
            "local model",
            f"{where}: {missing}",
            "set BEDROCK_MISTRAL_LOCAL_MODEL (or `config set local_model DIR`) "
            "to a checkpoint folder",
        )
    else:
        size = sum((path / f).stat().st_size for f in weights) / 1e6
        tokenizer = "tokenizer.model" in files or "tokenizer.model.v1" in files
        yield Finding(
            "ok",
            "local model",
            f"{path} ({len(weights)} weight file(s), {size:.1f} MB"
            + (", tokenizer" if tokenizer else ", v1 tokenizer from mistral-common")
            + ")",
        )
    yield from check_torch(needed)


def check_torch(needed: Status) -> Iterator[Finding]:
    if importlib.util.find_spec("torch") is None:
        yield Finding(needed, "torch", "not installed", 'pip install "bedrock-mistral[local]"')
        return
    try:
        import torch
    except Exception as err:  # a broken install raises all sorts of errors on import
        yield Finding(needed, "torch", f"installed but fails to import: {err}", "reinstall torch")
        return
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append(f"cuda ({torch.cuda.get_device_name(0)})")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    yield Finding(
        "ok", "torch", f"{importlib.metadata.version('torch')}; devices: {', '.join(devices)}"
    )
    yield from check_native_kernel()


def check_native_kernel() -> Iterator[Finding]:
    """Whether our int8/int4 CPU kernel builds here (a quantised model runs either way)."""
    from local_backend import native
    from local_backend.errors import LocalBackendError

    try:
        lib = native.library()
    except LocalBackendError as err:
        yield Finding("warn", "int8/int4 kernel", str(err), f"unset {native.ENV_VAR}")
        return
    if lib is None:
        why = "off" if native.mode() == "off" else "could not be built (no C compiler?)"
        yield Finding(
            "info",
            "int8/int4 kernel",
            f"ours {why}: quantised models use PyTorch's kernels (about 2x slower decode)",
            "" if native.mode() == "off" else "install a C compiler (gcc or clang)",
        )
        return
    simd = "AVX-512 VNNI" if lib.qmv_simd() else "plain C (no AVX-512 VNNI on this CPU)"
    yield Finding("ok", "int8/int4 kernel", f"ours, built for this CPU: {simd}")


CHECKS: tuple[tuple[str, Callable[..., Iterator[Finding]]], ...] = (
    ("config", check_config),
    ("backends", check_backends),
    ("aws", check_aws),
    ("access", check_model_access),
    ("local", check_local),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@client_options
@click.option(
    "--invoke",
    is_flag=True,
    help="Also send one 1-token request to the model (costs a fraction of a cent).",
)
def doctor(invoke: bool, **client_flags: Any) -> None:
    """Check credentials, region, endpoint, model access, the local model and torch.

    With an engine (--backend openai|ollama|vllm|llamacpp): that its URL answers, the
    models it serves, and that the chosen one is among them.

    Each finding says how to fix it. Exits 1 when something the chosen backend needs is broken.
    """
    env = current_env()
    settings = settings_from(**client_flags)
    failed = False
    for name, check in CHECKS:
        findings = check(settings, invoke) if name == "access" else check(settings)
        for finding in findings:
            _show(env, finding)
            failed = failed or finding.status == "fail"
    if failed:
        raise click.exceptions.Exit(1)


def _show(env: Env, finding: Finding) -> None:
    from rich.text import Text

    mark, style = _MARK[finding.status]
    line = Text()
    line.append(f"{mark} ", style=f"bold {style}")
    line.append(f"{finding.title:<13}", style="bold")
    line.append(finding.detail)
    if finding.fix:
        line.append(f"\n  {'':<13}fix: {finding.fix}", style=style)
    env.print(line)
