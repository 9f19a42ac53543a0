"""Models in Ollama's store: ``ollama:NAME[:TAG]`` -> the GGUF blob Ollama runs.

The store (``~/.ollama/models``, or ``$OLLAMA_MODELS``) keeps one JSON manifest per model at
``manifests/registry.ollama.ai/library/NAME/TAG`` (other registries and namespaces sit beside
``library``: ``ollama:ns/name`` reads ``.../registry.ollama.ai/ns/name``). The manifest's
layer whose ``mediaType`` is ``application/vnd.ollama.image.model`` is the GGUF file, stored as
``blobs/sha256-<hex>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from local_backend.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["PREFIX", "is_ollama_ref", "ollama_models", "ollama_root", "resolve_ollama"]

PREFIX = "ollama:"
_REGISTRY = "registry.ollama.ai"
_MODEL_LAYER = "application/vnd.ollama.image.model"


def is_ollama_ref(path: object) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def ollama_root() -> Path:
    """Ollama's model store: ``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def ollama_models(root: Path | None = None) -> list[str]:
    """``name:tag`` of every model in the store (``ns/name:tag`` outside ``library``)."""
    base = (root or ollama_root()) / "manifests" / _REGISTRY
    out = []
    for manifest in sorted(base.glob("*/*/*")):
        if manifest.is_file():
            ns, name, tag = manifest.parts[-3:]
            out.append(f"{name}:{tag}" if ns == "library" else f"{ns}/{name}:{tag}")
    return out


def resolve_ollama(ref: str, root: Path | None = None) -> Path:
    """The GGUF blob of ``ollama:NAME[:TAG]`` (tag ``latest`` by default)."""
    root = root or ollama_root()
    spec = ref.removeprefix(PREFIX)
    name, _, tag = spec.partition(":")
    tag = tag or "latest"
    if not name:
        raise CheckpointError(f"{ref!r} names no model: use ollama:NAME or ollama:NAME:TAG")
    ns, _, model = name.rpartition("/")
    manifest = root / "manifests" / _REGISTRY / (ns or "library") / model / tag
    if not manifest.is_file():
        there = ollama_models(root)
        listing = ", ".join(there) if there else "none"
        raise CheckpointNotFoundError(
            f"Ollama has no model {name}:{tag} in {root} (models there: {listing}); pull it "
            f"with `ollama pull {name}:{tag}`, or set OLLAMA_MODELS to the store it is in"
        )
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        digest = next(x["digest"] for x in layers if x.get("mediaType") == _MODEL_LAYER)
    except (ValueError, KeyError, TypeError, StopIteration) as err:
        raise CheckpointError(
            f"{manifest} is not an Ollama manifest with a model layer ({_MODEL_LAYER})"
        ) from err
    blob = root / "blobs" / str(digest).replace(":", "-")
    if not blob.is_file():
        raise CheckpointNotFoundError(
            f"Ollama's manifest for {name}:{tag} points to {blob}, which is missing: pull the "
            "model again"
        )
    return blob
