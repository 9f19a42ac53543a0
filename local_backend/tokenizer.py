"""SentencePiece tokenizer, Mistral v1 rules: ``<s>``/``</s>`` are control ids, all else is text.

``encode_prompt`` turns the ``[INST]`` prompt string of :func:`bedrock_mistral.prompt.format_prompt`
into the ids mistral-common's ``InstructTokenizerV1`` produces for the same conversation: the
string is cut at the template's ``<s>``/``</s>`` (which become BOS/EOS), the one space the
template wrote after each is dropped (it is SentencePiece's dummy prefix), and each piece is
encoded on its own. ``[INST]`` is plain text in v1, typed by a user or not.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from local_backend.errors import TokenizerError

__all__ = ["IncrementalDecoder", "Tokenizer", "bundled_v1_path", "find_tokenizer"]

MISTRAL_V1_VOCAB = 32000
_CONTROL = re.compile(r"(<s>|</s>)")


class Tokenizer:
    """>>> tok = Tokenizer.from_file("tokenizer.model")           # doctest: +SKIP
    >>> tok.encode_prompt("<s> [INST] Hi [/INST]")[:4]            # doctest: +SKIP
    [1, 733, 16289, 28793]
    """

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path | None = None) -> None:
        self._sp = processor
        self.path = path
        self.bos_id: int = processor.bos_id()
        self.eos_id: int = processor.eos_id()
        self.vocab_size: int = processor.get_piece_size()

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist: check the path")
        try:
            processor = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as err:
            raise TokenizerError(f"{path} is not a SentencePiece model: {err}") from err
        return cls(processor, path)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids: no BOS/EOS, one leading dummy-prefix space as Mistral's v1 does."""
        if not text:
            return []
        ids: list[int] = self._sp.encode(text, out_type=int)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids to text; control ids and ids past the tokenizer's vocabulary render as nothing."""
        text: str = self._sp.decode([i for i in ids if 0 <= i < self.vocab_size])
        return text

    def id_to_piece(self, token_id: int) -> str:
        piece: str = self._sp.id_to_piece(token_id)
        return piece

    def encode_prompt(self, prompt: str) -> list[int]:
        """An ``[INST]`` prompt string to ids, exactly as mistral-common v1 tokenizes it."""
        ids: list[int] = []
        after_marker = False
        for part in _CONTROL.split(prompt):
            if part == "<s>":
                ids.append(self.bos_id)
                after_marker = True
            elif part == "</s>":
                ids.append(self.eos_id)
                after_marker = True
            else:
                if after_marker and part.startswith(" "):
                    part = part[1:]  # the template's space is the next piece's dummy prefix
                ids.extend(self.encode(part))
                after_marker = False
        return ids


class IncrementalDecoder:
    """Turns tokens into text deltas that never end inside a UTF-8 character or drop a space.

    Each delta is the decode of a short window ending at the new token minus the decode of
    the same window without it, so SentencePiece's leading-space rule and byte-fallback
    pieces behave as in one decode of the whole sequence.

    ``context`` (the prompt's ids) makes the text a continuation of the prompt: a first
    token ``▁Hello`` after ``[/INST]`` reads `` Hello``, as servers such as TGI and vLLM
    return it, and a continued assistant turn keeps its space. Without context the text is
    what ``decode`` of the new ids alone gives (``Hello``).
    """

    _CONTEXT_TOKENS = 4

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self._ids: list[int] = list(context[-self._CONTEXT_TOKENS :]) if context else []
        self._prefix = 0  # window start
        self._read = len(self._ids)  # tokens whose text has been emitted (or is context)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        text = self._tok.decode(self._ids[self._prefix :])
        if len(text) <= len(prefix_text) or text.endswith("\ufffd"):
            return ""  # incomplete character (byte-fallback pieces still to come)
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still held back (an unfinished character at the very end)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        text = self._tok.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(prefix_text) :]


def bundled_v1_path() -> Path | None:
    """mistral-common's own copy of the v1 tokenizer (Mistral 7B / Mixtral 8x7B), if installed."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "data" / "tokenizer.model.v1"
        if candidate.is_file():
            return candidate
    return None


def find_tokenizer(checkpoint: Path, vocab_size: int) -> Tokenizer:
    """The checkpoint's ``tokenizer.model``, else mistral-common's v1 file (32000 vocab)."""
    for name in ("tokenizer.model", "tokenizer.model.v1"):
        if (checkpoint / name).is_file():
            return Tokenizer.from_file(checkpoint / name)
    if vocab_size == MISTRAL_V1_VOCAB:
        v1 = bundled_v1_path()
        if v1 is not None:
            return Tokenizer.from_file(v1)
        raise TokenizerError(
            f"{checkpoint} has no tokenizer.model and mistral-common is not installed: "
            "pip install 'bedrock-mistral[local]' or copy tokenizer.model into the folder"
        )
    raise TokenizerError(
        f"{checkpoint} has no tokenizer.model and its vocabulary ({vocab_size}) is not Mistral's "
        "v1 (32000): copy the model's SentencePiece tokenizer.model into the folder"
    )
