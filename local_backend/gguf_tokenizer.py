"""A GGUF file's SentencePiece tokenizer (``tokenizer.ggml.model`` "llama" or "t5"), rebuilt.

llama.cpp's converter copies each piece of ``tokenizer.model`` into the metadata:
``tokenizer.ggml.tokens`` (the piece), ``.scores`` and ``.token_type`` (SentencePiece's own
enum: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), plus the BOS/EOS/UNK
ids. We write those back into a SentencePiece ``ModelProto`` (protobuf, encoded here by hand
so no protobuf package is needed) with Mistral's trainer and normalizer settings: BPE with
byte fallback, the ``identity`` normalizer, a dummy prefix and no whitespace squeezing. The
result encodes text exactly as the original ``tokenizer.model`` does. A ``t5`` vocabulary
(llama.cpp's unigram tokenizer, which our GGUF export writes for a unigram ``tokenizer.model``
such as the bundled one) is rebuilt as a unigram model, with its whitespace settings and
normalisation table where the file has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sentencepiece as spm

from local_backend.errors import TokenizerError
from local_backend.protowire import bytes_field, float_field, int_field
from local_backend.tokenizer import Tokenizer

__all__ = ["model_proto", "tokenizer_from_metadata"]

_UNIGRAM, _BPE = 1, 2
_MODEL_TYPES = {"llama": _BPE, "t5": _UNIGRAM}  # tokenizer.ggml.model -> SentencePiece's type
_NORMAL, _BYTE = 1, 6
_TYPES = range(1, 7)


def model_proto(
    pieces: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    unk_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
    add_dummy_prefix: bool = True,
    model_type: int = _BPE,
    remove_extra_whitespaces: bool = False,
    charsmap: bytes = b"",
) -> bytes:
    """A serialized SentencePiece ``ModelProto`` (BPE unless ``model_type`` says unigram)
    holding these pieces."""
    out = bytearray()
    for piece, score, kind in zip(pieces, scores, types, strict=True):
        body = bytes_field(1, piece.encode("utf-8")) + float_field(2, float(score))
        if kind != _NORMAL:
            body += int_field(3, kind)
        out += bytes_field(1, body)
    trainer = (
        int_field(3, model_type)
        + int_field(4, len(pieces))
        + int_field(35, int(_BYTE in types))  # byte_fallback
        + int_field(40, unk_id)
        + int_field(41, bos_id)
        + int_field(42, eos_id)
        + int_field(43, -1)  # pad_id: none (encoding never pads)
        + bytes_field(44, " \u2047 ".encode())  # unk_surface, as Mistral's
    )
    normalizer = (
        (bytes_field(2, charsmap) if charsmap else bytes_field(1, b"identity"))
        + int_field(3, int(add_dummy_prefix))
        + int_field(4, int(remove_extra_whitespaces))
        + int_field(5, 1)  # escape_whitespaces
    )
    out += bytes_field(2, trainer) + bytes_field(3, normalizer)
    return bytes(out)


def tokenizer_from_metadata(meta: dict[str, Any], where: str) -> Tokenizer:
    """Our :class:`Tokenizer` from a GGUF file's ``tokenizer.ggml.*`` metadata."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise TokenizerError(f"{where} has no tokenizer in its metadata (tokenizer.ggml.model)")
    if kind not in _MODEL_TYPES:
        raise TokenizerError(
            f"{where} has a {kind!r} tokenizer; we read SentencePiece vocabularies only "
            "('llama': BPE, 't5': unigram)"
        )
    try:
        pieces = list(meta["tokenizer.ggml.tokens"])
        n = len(pieces)
        scores = [float(s) for s in meta.get("tokenizer.ggml.scores", [0.0] * n)]
        types = [int(t) for t in meta.get("tokenizer.ggml.token_type", [_NORMAL] * n)]
    except (KeyError, TypeError, ValueError) as err:
        raise TokenizerError(f"{where}: tokenizer metadata is incomplete: {err}") from err
    if len(scores) != n or len(types) != n or any(t not in _TYPES for t in types):
        raise TokenizerError(
            f"{where}: tokenizer metadata disagrees with itself ({n} tokens, {len(scores)} "
            f"scores, {len(types)} types, or a type outside 1..6)"
        )
    proto = model_proto(
        pieces,
        scores,
        types,
        unk_id=int(meta.get("tokenizer.ggml.unknown_token_id", 0)),
        bos_id=int(meta.get("tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(meta.get("tokenizer.ggml.eos_token_id", 2)),
        add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
        model_type=_MODEL_TYPES[kind],
        remove_extra_whitespaces=bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False)),
        charsmap=bytes(meta.get("tokenizer.ggml.precompiled_charsmap", b"")),
    )
    try:
        processor = spm.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError) as err:
        raise TokenizerError(
            f"{where}: its vocabulary is not a valid SentencePiece model: {err}"
        ) from err
    return Tokenizer(processor)
