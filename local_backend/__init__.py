"""Our own PyTorch Mistral/Mixtral: grouped-query attention, sliding-window attention
with a rolling KV cache, and a sparse mixture of experts. Importable on its own.

>>> import local_backend
>>> model = local_backend.load()                                   # doctest: +SKIP
>>> ids = model.tokenizer.encode_prompt("<s> [INST] Hi [/INST]")   # doctest: +SKIP
>>> model.tokenizer.decode(model.generate(ids, max_new_tokens=20)) # doctest: +SKIP

Names that need torch are imported on first use, so ``local_backend.config`` and
``local_backend.tokenizer`` stay cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_backend.checkpoint import load_transformer, save_consolidated, save_pretrained
    from local_backend.config import ModelConfig, MoeConfig
    from local_backend.model import Transformer
    from local_backend.quant_checkpoint import save_quantized
    from local_backend.runtime import LocalModel, RoutingTrace, load
    from local_backend.tokenizer import Tokenizer

__all__ = [
    "LocalModel",
    "ModelConfig",
    "MoeConfig",
    "RoutingTrace",
    "Tokenizer",
    "Transformer",
    "load",
    "load_transformer",
    "save_consolidated",
    "save_pretrained",
    "save_quantized",
]

_WHERE = {
    "ModelConfig": "local_backend.config",
    "MoeConfig": "local_backend.config",
    "Transformer": "local_backend.model",
    "load_transformer": "local_backend.checkpoint",
    "save_pretrained": "local_backend.checkpoint",
    "save_consolidated": "local_backend.checkpoint",
    "save_quantized": "local_backend.quant_checkpoint",
    "LocalModel": "local_backend.runtime",
    "RoutingTrace": "local_backend.runtime",
    "load": "local_backend.runtime",
    "Tokenizer": "local_backend.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'local_backend' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
