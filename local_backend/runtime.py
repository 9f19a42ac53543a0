"""``LocalModel``: a loaded checkpoint plus its tokenizer, with the inference API others rely on.

>>> model = load("path/to/Mixtral-8x7B-Instruct-v0.1", dtype="bfloat16")    # doctest: +SKIP
>>> ids = model.tokenizer.encode_prompt("<s> [INST] Hello [/INST]")         # doctest: +SKIP
>>> model.tokenizer.decode(model.generate(ids, max_new_tokens=32))          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from local_backend import matvec
from local_backend import quant_checkpoint as qc
from local_backend.cache import KVCache
from local_backend.checkpoint import load_transformer
from local_backend.config import ModelConfig
from local_backend.device import CUDA_DTYPE, resolve_device
from local_backend.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    TokenizerError,
)
from local_backend.generate import DEFAULT_PREFILL_CHUNK, SamplingParams, TextStream, token_stream
from local_backend.model import MoeFeedForward, Transformer, select_experts
from local_backend.quant import QuantSpec
from local_backend.tokenizer import Tokenizer, find_tokenizer

__all__ = ["BUNDLED_WEIGHTS", "LocalModel", "RoutingTrace", "gguf_path", "load"]

logger = logging.getLogger(__name__)

BUNDLED_WEIGHTS = Path(__file__).resolve().parent / "weights"
BUNDLED_DTYPE = "float32"


@dataclass(frozen=True)
class RoutingTrace:
    """Which experts each token of a prompt went to, layer by layer (best expert first)."""

    token_ids: list[int]
    pieces: list[str]
    experts: list[list[tuple[int, ...]]]  # [layer][token] -> chosen expert ids
    weights: list[list[tuple[float, ...]]]  # [layer][token] -> their renormalised weights
    num_experts: int

    def expert_counts(self) -> list[list[int]]:
        """[layer][expert] -> how many tokens chose that expert."""
        counts = [[0] * self.num_experts for _ in self.experts]
        for layer, per_token in enumerate(self.experts):
            for chosen in per_token:
                for e in chosen:
                    counts[layer][e] += 1
        return counts


class LocalModel:
    """A model ready for inference. Every call runs under ``torch.inference_mode``.

    Forward calls take ``self.lock`` one step at a time, so several generations (threads) can
    share one model and interleave token by token.
    """

    def __init__(
        self, model: Transformer, tokenizer: Tokenizer | TokenizerError, *, path: Path | None = None
    ) -> None:
        self.model = model.eval()
        self._tokenizer = tokenizer
        self.path = path
        self.lock = threading.Lock()
        self.prefill_chunk = DEFAULT_PREFILL_CHUNK

    @property
    def tokenizer(self) -> Tokenizer:
        """The SentencePiece tokenizer; raises TokenizerError when the checkpoint has none."""
        if isinstance(self._tokenizer, TokenizerError):
            raise self._tokenizer
        return self._tokenizer

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.tok_embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @property
    def matvec_path(self) -> matvec.MatvecPath:
        """How a decode step multiplies by this model's dense matrices: ``"mv"`` or
        ``"linear"``, measured at the first load in its dtype (:mod:`local_backend.matvec`)."""
        return matvec.path_for(self.dtype)

    def quant_kernels(self) -> dict[str, int]:
        """Kernel form -> how many quantised matrices (experts one by one) it serves; empty
        for a model without quantised weights."""
        return qc.kernel_counts(self.model)

    @property
    def context_window(self) -> int:
        return self.config.max_seq_len

    def new_cache(self, batch_size: int = 1) -> KVCache:
        with torch.inference_mode():
            return self.model.new_cache(batch_size)

    def forward(self, tokens: Tensor | Sequence[int], cache: KVCache | None = None) -> Tensor:
        """tokens [B, S] (or a list of ids) -> logits [B, S, V]; appends to ``cache`` if given."""
        batch = tokens if isinstance(tokens, Tensor) else torch.tensor([list(tokens)])
        if batch.dim() == 1:
            batch = batch[None]
        with self.lock, torch.inference_mode():
            logits: Tensor = self.model(batch.to(self.device), cache)
        return logits

    def stream(
        self,
        prompt_tokens: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        *,
        stop_at_eos: bool = True,
    ) -> TextStream:
        """Text deltas as tokens decode; ``stop_reason`` and counts are set when it ends.

        The text continues the prompt: a reply after ``[/INST]`` usually starts with a space,
        as Bedrock's does.
        """
        tokenizer = self.tokenizer
        tokens = self.iter_tokens(
            prompt_tokens, max_new_tokens, temperature, top_p, top_k, seed, stop_at_eos
        )
        return TextStream(
            tokens,
            tokenizer,
            prompt_tokens=len(prompt_tokens),
            stop=stop or (),
            stop_ids=self._stop_ids(stop_at_eos),
            context=prompt_tokens,
        )

    def _stop_ids(self, stop_at_eos: bool) -> frozenset[int]:
        return frozenset({self.config.eos_token_id}) if stop_at_eos else frozenset()

    def iter_tokens(
        self,
        prompt_tokens: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        stop_at_eos: bool = True,
    ) -> Iterator[int]:
        """The new token ids one at a time, as they are produced (no tokenizer needed)."""
        if not prompt_tokens:
            raise ValueError("prompt_tokens is empty: a prompt needs at least one token (e.g. BOS)")
        return token_stream(
            self.model,
            prompt_tokens,
            max_new_tokens=max_new_tokens,
            sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed),
            stop_ids=self._stop_ids(stop_at_eos),
            lock=self.lock,
            chunk_size=self.prefill_chunk,
        )

    def generate(
        self,
        prompt_tokens: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        *,
        stop_at_eos: bool = True,
    ) -> list[int]:
        """The new token ids: up to ``max_new_tokens``, ending with EOS or the token that
        completed a stop string when generation stopped early."""
        if stop:  # stop strings need text; otherwise no tokenizer is involved
            stream = self.stream(
                prompt_tokens,
                max_new_tokens,
                temperature,
                top_p,
                top_k,
                seed,
                stop,
                stop_at_eos=stop_at_eos,
            )
            for _ in stream:
                pass
            return stream.token_ids
        return list(
            self.iter_tokens(
                prompt_tokens, max_new_tokens, temperature, top_p, top_k, seed, stop_at_eos
            )
        )

    def route(self, prompt: str | Sequence[int]) -> RoutingTrace:
        """Expert choices per token and layer for a prompt (text goes through ``encode_prompt``)."""
        moe = self.config.moe
        if moe is None:
            raise ValueError(f"{self.config.architecture} is dense: it has no experts to trace")
        ids = self.tokenizer.encode_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("the prompt is empty: nothing to route")
        with self.lock, torch.inference_mode():
            batch = torch.tensor([ids], device=self.device)
            _, router_logits = self.model.forward_with_router_logits(batch)
        experts, weights = [], []
        for logits in router_logits:
            w, e = select_experts(logits, moe.num_experts_per_tok)
            experts.append([tuple(row) for row in e.tolist()])
            weights.append([tuple(row) for row in w.tolist()])
        return RoutingTrace(
            token_ids=ids,
            pieces=[self._piece(i) for i in ids],
            experts=experts,
            weights=weights,
            num_experts=moe.num_experts,
        )

    def _piece(self, token_id: int) -> str:
        tok = self._tokenizer
        if isinstance(tok, Tokenizer) and 0 <= token_id < tok.vocab_size:
            return tok.id_to_piece(token_id)
        return f"<{token_id}>"

    def experts(self) -> list[MoeFeedForward]:
        """The MoE layers (empty for a dense model)."""
        return [m for m in self.model.modules() if isinstance(m, MoeFeedForward)]


def load(
    path: str | Path | None = None,
    dtype: str | None = None,
    *,
    quantize: str | None = None,
    group_size: int | None = None,
    device: str | torch.device | None = None,
) -> LocalModel:
    """Load a checkpoint folder (Hugging Face, consolidated, or one we quantised); None = the
    bundled model.

    dtype None keeps the checkpoint's own dtype, except for the bundled model, which is stored
    in half precision to stay small but runs in float32 (lossless, and on a CPU about twice as
    fast as float16 at its size). "float32", "bfloat16" or "float16" converts. With a quantised
    model, dtype is that of everything but the quantised matrices (residual stream, norms, KV
    cache): "float32" decodes about 1.15x faster on a CPU than bfloat16 (the int8/int4 kernel
    reads either as it is; the small per-token operations are faster in float32), for twice
    the memory of the embedding and the KV cache.

    ``quantize="int8"`` (per output channel) or ``"int4"`` (groups of ``group_size`` = 32, 64
    or 128 input columns, default 64) quantises every linear layer while loading, one tensor
    at a time. A folder written by ``bedrock-mistral local quantize`` loads as it is.

    A GGUF file (llama.cpp, Ollama) or ``"ollama:NAME[:TAG]"`` (a model in Ollama's store)
    loads through :mod:`local_backend.gguf`: its quantised blocks become our int8/int4 forms.

    ``device`` "cpu" or "cuda" (or "cuda:N"); None picks CUDA when available, else the CPU. On
    CUDA, dtype None means bfloat16; on the CPU the defaults above hold. Quantised matrices
    are built on the CPU one at a time and repacked on the device
    (:mod:`local_backend.quant_device`: which kernel serves them is logged, and
    :meth:`LocalModel.quant_kernels` says).

    >>> model = load("Mistral-7B-Instruct-v0.2", quantize="int4")   # doctest: +SKIP
    >>> model = load("ollama:mistral")                              # doctest: +SKIP
    """
    gguf_file = gguf_path(path)
    where = resolve_device(device)
    if dtype is None and where.type == "cuda":
        dtype = CUDA_DTYPE
    if gguf_file is not None:
        from local_backend.gguf import load_gguf  # numpy block decoding, only for GGUF files

        model, tokenizer = load_gguf(
            gguf_file, dtype, quantize=quantize, group_size=group_size, device=where
        )
        return _ready(model, tokenizer, gguf_file)
    root = BUNDLED_WEIGHTS if path is None else Path(path).expanduser()
    if root.is_file():
        root = root.parent
    if path is None and not (root / "config.json").is_file():
        raise CheckpointNotFoundError(
            f"the bundled model is not installed in {root}: pass a checkpoint folder, e.g. "
            "local_backend.load('/path/to/Mistral-7B-Instruct-v0.2')"
        )
    if path is None and dtype is None:
        dtype = BUNDLED_DTYPE
    model = _load_model(root, dtype, quantize, group_size, where)
    return _ready(model, _tokenizer_for(root, model.config.vocab_size), root)


def _ready(model: Transformer, tokenizer: Tokenizer | TokenizerError, path: Path) -> LocalModel:
    """The loaded model with its matrix-vector path chosen and its quantised kernels logged."""
    matvec.choose(model.matvec_weights())
    kernels = qc.kernel_counts(model)
    if kernels:
        device = model.tok_embeddings.weight.device
        logger.info("quantised products on %s: %s", device, _counted(kernels))
    return LocalModel(model, tokenizer, path=path)


def _counted(kernels: dict[str, int]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in sorted(kernels.items()))


def gguf_path(path: str | Path | None) -> Path | None:
    """The GGUF file ``path`` names (an ``ollama:`` reference resolved), or None."""
    from local_backend import ollama

    if ollama.is_ollama_ref(path):
        assert isinstance(path, str)
        return ollama.resolve_ollama(path)
    if path is None:
        return None
    file = Path(path).expanduser()
    if file.is_file() and (file.suffix.lower() == ".gguf" or _has_gguf_magic(file)):
        return file
    if file.suffix.lower() == ".gguf":
        raise CheckpointNotFoundError(f"GGUF file {file} does not exist: check the path")
    return None


def _has_gguf_magic(file: Path) -> bool:
    try:
        with file.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _load_model(
    root: Path,
    dtype: str | None,
    quantize: str | None,
    group_size: int | None,
    device: torch.device,
) -> Transformer:
    """Full precision, quantised while loading, or a quantised checkpoint as stored."""
    if quantize is None and group_size is not None:
        raise CheckpointError("group_size needs quantize='int4'")
    if quantize is None and not qc.is_quantized(root):
        return load_transformer(root, dtype=dtype, device=device)
    spec = QuantSpec.parse(quantize, group_size) if quantize is not None else None
    if not qc.is_quantized(root):
        assert spec is not None
        return qc.load_quantizing(root, spec, dtype=dtype, device=device)
    stored, _ = qc.read_spec(root)
    if spec is not None and spec != stored:
        raise CheckpointError(
            f"{root} is already quantised ({_describe(stored)}); it cannot be loaded as "
            f"{_describe(spec)}: load it without quantize, or quantize the original checkpoint"
        )
    return qc.load_quantized(root, dtype=dtype, device=device)


def _describe(spec: QuantSpec) -> str:
    return spec.scheme if spec.scheme == "int8" else f"int4, group size {spec.group_size}"


def _tokenizer_for(root: Path, vocab_size: int) -> Tokenizer | TokenizerError:
    """The tokenizer, or the error to raise when one is used (token-level use needs none)."""
    try:
        tokenizer = find_tokenizer(root, vocab_size)
    except TokenizerError as err:
        logger.info("%s", err)  # fine for token-level use; text-level calls raise it
        return err
    if tokenizer.vocab_size > vocab_size:
        mismatch = TokenizerError(
            f"{tokenizer.path} has {tokenizer.vocab_size} pieces but the model's vocabulary is "
            f"{vocab_size}: the tokenizer belongs to another model"
        )
        logger.warning("%s", mismatch)
        return mismatch
    return tokenizer
