"""Named engines that speak the OpenAI API: defaults only (URL, key variable, model names).

A preset changes nothing but defaults: ``backend="ollama"`` is ``backend="openai"`` with
``base_url="http://localhost:11434/v1"`` and Ollama's names for the registry's models.
This module imports nothing heavy, so the CLI can ask about presets cheaply.

>>> PRESETS["vllm"].engine_name(resolve_model("mixtral-8x7b"))
'mistralai/Mixtral-8x7B-Instruct-v0.1'
>>> engine_model_spec("mistral:7b-instruct").dialect
'text'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bedrock_mistral.models import ModelSpec, resolve_model

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "PRESETS",
    "EnginePreset",
    "engine_model_spec",
    "is_engine_backend",
]

ENV_BASE_URL = "BEDROCK_MISTRAL_BASE_URL"
ENV_API_KEY = "BEDROCK_MISTRAL_OPENAI_API_KEY"

_MISTRAL_7B = "mistral.mistral-7b-instruct-v0:2"
_MIXTRAL = "mistral.mixtral-8x7b-instruct-v0:1"
_LARGE_2407 = "mistral.mistral-large-2407-v1:0"


@dataclass(frozen=True)
class EnginePreset:
    """The defaults of one engine. ``model_names``: registry canonical id -> engine's name."""

    name: str
    title: str
    base_url: str | None  # None: the caller must say where the engine is
    start_hint: str  # how to start the engine when nothing answers at base_url
    key_env: tuple[str, ...] = ()  # engine-specific key variables, after ENV_API_KEY
    base_url_env: tuple[str, ...] = ()  # engine-specific URL variables, after ENV_BASE_URL
    model_names: Mapping[str, str] = field(default_factory=dict)
    # llama.cpp: the engine writes BOS before every /v1/completions prompt and parses "<s>"
    # in it as BOS too, and its tokenizer re-adds SentencePiece's dummy-prefix space after
    # every special token. So raw mode sends our prompt without its leading "<s>" and
    # without the space our template writes after "<s>" and "</s>" (see openai_wire.raw_prompt).
    engine_bos: bool = False
    # Where the engine counts tokens (POST, under the root without /v1), tried in order.
    tokenize_paths: tuple[str, ...] = ("/tokenize",)
    # Sent in every generation body: the engine's own knobs set to what Bedrock does.
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key_variables(self) -> tuple[str, ...]:
        """Environment variables read for the API key, first set wins."""
        return (ENV_API_KEY, *self.key_env)

    def engine_name(self, spec: ModelSpec) -> str:
        """What to send as ``model`` for ``spec``: the engine's name for a registry model,
        else the id as given (an engine's own name, or a Bedrock id a proxy understands)."""
        if spec.known:
            return self.model_names.get(spec.canonical_id, spec.model_id)
        return spec.model_id


PRESETS: dict[str, EnginePreset] = {
    "openai": EnginePreset(
        name="openai",
        title="an OpenAI-compatible server",
        base_url=None,
        start_hint="start the engine, or pass the right base_url",
        key_env=("OPENAI_API_KEY",),
        base_url_env=("OPENAI_BASE_URL",),
    ),
    "ollama": EnginePreset(
        name="ollama",
        title="Ollama",
        base_url="http://localhost:11434/v1",
        start_hint="start it with `ollama serve` (and `ollama pull mistral:7b-instruct`)",
        model_names={
            _MISTRAL_7B: "mistral:7b-instruct",
            _MIXTRAL: "mixtral:8x7b",
            _LARGE_2407: "mistral-large:123b",
        },
    ),
    "vllm": EnginePreset(
        name="vllm",
        title="vLLM",
        base_url="http://localhost:8000/v1",
        start_hint="start it with `vllm serve mistralai/Mistral-7B-Instruct-v0.2`",
        key_env=("VLLM_API_KEY",),
        model_names={
            _MISTRAL_7B: "mistralai/Mistral-7B-Instruct-v0.2",
            _MIXTRAL: "mistralai/Mixtral-8x7B-Instruct-v0.1",
            _LARGE_2407: "mistralai/Mistral-Large-Instruct-2407",
        },
    ),
    "llamacpp": EnginePreset(
        name="llamacpp",
        title="llama.cpp's server",
        base_url="http://localhost:8080/v1",
        start_hint="start it with `llama-server -m model.gguf --port 8080`",
        key_env=("LLAMA_API_KEY",),
        # Measured with llama-cpp-python 0.3.36 on Mistral's v1 vocabulary: the engine then
        # reads exactly mistral-common's tokens (tests/engines/test_llamacpp_tokens.py).
        engine_bos=True,
        # llama-server: /tokenize; llama-cpp-python's server: /extras/tokenize/count.
        tokenize_paths=("/tokenize", "/extras/tokenize/count"),
        # llama-cpp-python's server penalises repeated tokens (1.1) unless told otherwise,
        # so temperature 0 would not be greedy; llama-server's default is already 1.0.
        extra_body={"repeat_penalty": 1.0},
    ),
}


def is_engine_backend(name: str | None) -> bool:
    """Whether ``name`` is the openai backend or one of its presets."""
    return isinstance(name, str) and name.strip().lower() in PRESETS


def engine_model_spec(name: str) -> ModelSpec:
    """The spec for a model only the engine knows (``mistral:7b-instruct``, a HF repo id).

    Limits are conservative (32K window, 8K out); the ``text`` dialect keeps ``top_k`` and
    ``stop``, which the engines accept, and the ``[INST]`` prompt for raw mode. To state
    the engine's real limits, pass your own ``ModelSpec`` as ``model=``.
    """
    registry = None
    try:
        registry = resolve_model(name)
    except ValueError:
        registry = None
    if registry is not None and registry.known:
        return registry
    return ModelSpec(
        model_id=name,
        alias=name,
        name=name,
        dialect="text",
        context_window=32_000,
        max_output_tokens=8_192,
        default_max_tokens=512,
        default_temperature=0.7,
        default_top_p=1.0,
        default_top_k=None,
        input_price_per_1k=None,
        output_price_per_1k=None,
        profile_geos=(),
        known=False,
    )
