"""Train the bundled model's SentencePiece tokenizer from the synthetic data's templates.

The word tasks (reverse, uppercase, count letters) are only learnable when the word in the
question arrives one character per token, and a name is only recalled exactly when it is copied
character by character. So the vocabulary is: every character (digits split one per token, as
in Mistral's tokenizer), byte fallback so any text encodes, and whole phrases of the data's fixed
text (``▁What▁is▁the▁capital▁of``, ``▁Paris``, ``▁Reverse▁the▁word:``) as user-defined pieces,
which SentencePiece always takes whole (longest match). A phrase becomes a piece only if it cannot
match inside a variable word (:func:`keep_piece`): no piece starts with a lowercase letter run that
a longer word could continue (``▁the`` would swallow the start of ``theme``), and none starts with
two capitals (``AB`` inside ``TABLE``). Multi-character pieces the trainer itself proposes are
dropped, so everything outside the template phrases is one token per character.

``python -m training tokenizer OUT.model`` trains one.
"""

from __future__ import annotations

import argparse
import io
import logging
import random
import re
import string
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm

from bedrock_mistral.prompt import format_prompt
from local_backend.protowire import fields
from training.data import MIX, TEMPLATE_TEXTS, TaskGenerator
from training.data_lists import CAPITALS

__all__ = ["corpus", "filter_pieces", "keep_piece", "phrase_pieces", "train_tokenizer"]

logger = logging.getLogger(__name__)

_SLOT = re.compile(r"\{[a-z]\}")
_CHARSET = f"{string.ascii_letters}{string.digits}{string.punctuation} \n"
_CONTROL = re.compile(r"(<s>|</s>)")
_LETTERS = re.compile(r"[A-Za-z]*")

# SentencePiece ModelProto: field 1 = repeated piece; in a piece, 1 = text, 3 = type.
_PIECE_FIELD = 1
_NORMAL_TYPE = 1


def _slot_free_pieces(template: str) -> Iterator[str]:
    """The text between the slots of a template, as SentencePiece pieces (spaces as ``▁``)."""
    parts = _SLOT.split(template)
    for index, part in enumerate(parts):
        # a part opening the text, or following a space, starts with the dummy-prefix "▁"
        lead = "▁" if index == 0 or part.startswith(" ") else ""
        body = part.strip(" ")
        if body:
            yield lead + body.replace(" ", "▁")


def phrase_pieces() -> list[str]:
    """User-defined pieces: the templates' fixed phrases, countries and capitals, if safe."""
    pieces: dict[str, None] = {}
    for template in TEMPLATE_TEXTS:
        for sentence in re.split(r"(?<=[.!?]) ", template):
            for piece in _slot_free_pieces(sentence):
                pieces[piece] = None
    for country, city in CAPITALS:
        pieces["▁" + country.replace(" ", "▁")] = None
        pieces["▁" + city.replace(" ", "▁")] = None
    return [p for p in pieces if len(p) > 1 and keep_piece(p)]


def corpus(seed: int = 0, n_samples: int = 20_000) -> Iterator[str]:
    """The strings ``Tokenizer.encode_prompt`` encodes for training conversations."""
    rng = random.Random(seed)
    gen = TaskGenerator("train")
    families, weights = list(MIX), list(MIX.values())
    for _ in range(n_samples):
        sample = gen.sample(rng.choices(families, weights)[0], rng)
        after_marker = False
        for part in _CONTROL.split(format_prompt(list(sample.messages))):
            if part in ("<s>", "</s>"):
                after_marker = True
                continue
            if after_marker and part.startswith(" "):
                part = part[1:]
            after_marker = False
            if part:
                yield part
    # every printable ASCII character gets its own piece, seen in the samples or not
    for _ in range(20):
        yield f"{string.ascii_letters} {string.digits} {string.punctuation}"


def keep_piece(piece: str) -> bool:
    """False for a piece that could match inside a variable word (see the module docstring).

    A lowercase start is safe only when its letter run ends inside the piece at punctuation
    (``▁backwards.`` can only match the exact word "backwards" before a full stop).
    """
    body = piece.lstrip("▁")
    if len(piece) < 2 or not body:
        return True
    letters = _LETTERS.match(body)
    run = letters.group(0) if letters else ""
    if body[0].islower():
        return len(run) < len(body) and body[len(run)] != "▁"
    if body[0].isupper():
        return not (len(run) >= 2 and run.isupper())
    return True


def _piece_text_and_type(payload: bytes) -> tuple[str, int]:
    text, kind = "", _NORMAL_TYPE
    for number, _, value, _ in fields(payload):
        if number == 1 and isinstance(value, bytes):
            text = value.decode("utf-8")
        elif number == 3 and isinstance(value, int):
            kind = value
    return text, kind


def filter_pieces(model: bytes) -> tuple[bytes, list[str]]:
    """Drop every multi-character piece the trainer learned (user-defined ones stay).

    Editing the protobuf at the wire level keeps the ``protobuf`` package out of our
    dependencies; a unigram model stays valid with any subset of its normal pieces.
    """
    out = io.BytesIO()
    dropped: list[str] = []
    for number, _, payload, raw in fields(model):
        if number == _PIECE_FIELD and isinstance(payload, bytes):
            text, kind = _piece_text_and_type(payload)
            if kind == _NORMAL_TYPE and len(text) > 1:
                dropped.append(text)
                continue
        out.write(raw)
    return out.getvalue(), dropped


def train_tokenizer(path: str | Path, *, seed: int = 0) -> Path:
    """Train, filter and write ``tokenizer.model``; returns its path."""
    path = Path(path)
    buffer = io.BytesIO()
    phrases = phrase_pieces()
    # room for the 3 control ids, 256 bytes, [INST]/[/INST], the phrases and the characters
    vocab_size = 3 + 256 + 2 + len(phrases) + len(_CHARSET)
    spm.SentencePieceTrainer.train(
        sentence_iterator=corpus(seed),
        model_writer=buffer,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        split_digits=True,
        byte_fallback=True,
        split_by_whitespace=False,
        max_sentencepiece_length=32,
        user_defined_symbols=["[INST]", "[/INST]", *phrases],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    model, dropped = filter_pieces(buffer.getvalue())
    logger.info(
        "tokenizer: %d phrase pieces; dropped %d learned multi-character pieces",
        len(phrases),
        len(dropped),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    spm.SentencePieceProcessor(model_file=str(path))  # fails loudly if the edit broke the model
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write tokenizer.model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train_tokenizer(args.out, seed=args.seed)


if __name__ == "__main__":
    main()
