"""Deterministic synthetic instruct data for the bundled model, with a held-out test split.

Every sample is a conversation in the message shape ``format_prompt`` takes; its last message is
the assistant reply the model learns (and the evaluation expects, exactly). The test split is
disjoint from training by construction, decided by a stable hash rather than by sampling order:

- arithmetic: an ``(op, A, B)`` pair is test-only when its hash falls in 1 of 10 buckets;
- words and names: a word or first name is test-only when its hash falls in 1 of 6 buckets;
- capitals: every country is trained, but some phrasings are only ever asked at test time;
- identity and greetings: a few phrasings are test-only.

>>> sample = TaskGenerator("train").sample("add2", random.Random(0))
>>> sample.messages[-1]["role"], sample.family
('assistant', 'add2')
"""

from __future__ import annotations

import random
import string
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from training.data_lists import CAPITALS, NAMES, WORDS

__all__ = [
    "EVAL_FAMILIES",
    "FAMILIES",
    "GREETING_REPLY",
    "IDENTITY_REPLY",
    "MIX",
    "MIXES",
    "MIX_FOCUS",
    "MIX_LATE",
    "MIX_STAGE2",
    "MIX_STAGE3",
    "TEMPLATE_TEXTS",
    "Sample",
    "Split",
    "TaskGenerator",
    "heldout",
    "is_test_name",
    "is_test_pair",
    "is_test_word",
    "iter_samples",
]

Split = Literal["train", "test"]
Message = dict[str, str]

IDENTITY_REPLY = (
    "I am a small local Mixtral-style model running on your machine. "
    "The larger Mistral models run on Amazon Bedrock."
)
GREETING_REPLY = "Hello! How can I help you today?"
THANKS_REPLY = "You're welcome!"
NAME_ACK = "Nice to meet you!"

# Sampling weights of the training mix (per conversation). Arithmetic gets the most: it is the
# hardest family for a small model and carries the strictest targets.
MIX: dict[str, float] = {
    "add1": 0.015,
    "add2": 0.09,
    "add3": 0.12,
    "addx": 0.035,
    "sub1": 0.015,
    "sub2": 0.09,
    "sub3": 0.08,
    "subx": 0.03,
    "mul1": 0.03,
    "mul2": 0.04,
    "reverse": 0.10,
    "upper": 0.06,
    "count": 0.08,
    "capital": 0.05,
    "greeting": 0.015,
    "identity": 0.02,
    "thanks": 0.005,
    "recall": 0.05,
}
# The curriculum's later phases (see ``training.train``). Once capitals, counting and the
# fixed replies are learned, most of the compute goes to digit-exact arithmetic, uppercasing
# and name recall, which a small model learns last (MIX_FOCUS). In the last phase half of the
# recall conversations keep the name inside the sliding window (``recall_near``: 0-2 filler
# turns), where copying a name can be learned before relaying it further (MIX_LATE).
MIX_FOCUS: dict[str, float] = {
    "add1": 0.01, "add2": 0.12, "add3": 0.14, "addx": 0.035,
    "sub1": 0.01, "sub2": 0.12, "sub3": 0.08, "subx": 0.03,
    "mul1": 0.025, "mul2": 0.03,
    "reverse": 0.09, "upper": 0.09, "count": 0.04,
    "capital": 0.02,
    "greeting": 0.01, "identity": 0.015, "thanks": 0.005,
    "recall": 0.07,
}  # fmt: skip
MIX_LATE: dict[str, float] = {
    **{k: v for k, v in MIX_FOCUS.items() if k != "recall"},
    "recall": 0.04, "recall_near": 0.04,
}  # fmt: skip
# Stage two (a warm restart of the learning rate after stage one's curriculum): arithmetic,
# subtraction above all, gets most of the compute; recall adds made-up names (``recall_copy``)
# so that copying is learned rather than a list of names, and identity gets extra phrasings.
MIX_STAGE2: dict[str, float] = {
    "add1": 0.01, "add2": 0.14, "add3": 0.14, "addx": 0.03,
    "sub1": 0.01, "sub2": 0.16, "sub3": 0.08, "subx": 0.03,
    "mul1": 0.02, "mul2": 0.02,
    "reverse": 0.06, "upper": 0.07, "count": 0.03,
    "capital": 0.02,
    "greeting": 0.01, "identity": 0.01, "thanks": 0.005,
    "recall": 0.02, "recall_near": 0.02,
    "identity_more": 0.01, "recall_copy": 0.03,
}  # fmt: skip
# Stage three (a shorter, lower restart): two- and three-digit subtraction, the family that
# converges last, gets a third of the compute; the rest keeps every skill in rehearsal.
MIX_STAGE3: dict[str, float] = {
    "add1": 0.01, "add2": 0.08, "add3": 0.12, "addx": 0.03,
    "sub1": 0.02, "sub2": 0.22, "sub3": 0.12, "subx": 0.05,
    "mul1": 0.03, "mul2": 0.02,
    "reverse": 0.04, "upper": 0.05, "count": 0.02,
    "capital": 0.02,
    "greeting": 0.01, "identity": 0.015, "thanks": 0.005,
    "recall": 0.02, "recall_near": 0.02,
    "identity_more": 0.02, "recall_copy": 0.03,
}  # fmt: skip
# The mixes a training restart may name.
MIXES: dict[str, dict[str, float]] = {"stage2": MIX_STAGE2, "stage3": MIX_STAGE3}
FAMILIES: tuple[str, ...] = tuple(MIX)
# The families the evaluation reports (the training-only mixed-length ones are left out).
EVAL_FAMILIES: tuple[str, ...] = (
    "add2",
    "add3",
    "sub2",
    "sub3",
    "mul1",
    "mul2",
    "reverse",
    "upper",
    "count",
    "capital",
    "greeting",
    "identity",
    "recall",
)

_ADD = (
    "What is {a} + {b}?",
    "What is {a} plus {b}?",
    "What's {a} + {b}?",
    "Compute {a} + {b}.",
    "Calculate {a} + {b}.",
    "{a} + {b} = ?",
    "Add {a} and {b}.",
    "what is {a}+{b}?",
    "How much is {a} + {b}?",
    "What is the sum of {a} and {b}?",
)
_SUB = (
    "What is {a} - {b}?",
    "What is {a} minus {b}?",
    "What's {a} - {b}?",
    "Compute {a} - {b}.",
    "Calculate {a} - {b}.",
    "{a} - {b} = ?",
    "Subtract {b} from {a}.",
    "what is {a}-{b}?",
    "How much is {a} - {b}?",
    "What is {a} take away {b}?",
)
_MUL = (
    "What is {a} * {b}?",
    "What is {a} times {b}?",
    "What's {a} * {b}?",
    "Compute {a} * {b}.",
    "Calculate {a} x {b}.",
    "{a} * {b} = ?",
    "Multiply {a} by {b}.",
    "what is {a}*{b}?",
    "How much is {a} times {b}?",
    "What is the product of {a} and {b}?",
)
_REVERSE = (
    "Reverse the word: {w}",
    "Reverse the word {w}.",
    "Reverse {w}.",
    "Spell {w} backwards.",
    "Write {w} backwards.",
    "What is {w} reversed?",
    "reverse: {w}",
)
_UPPER = (
    "Uppercase: {w}",
    "Convert {w} to uppercase.",
    "Write {w} in capital letters.",
    "Make {w} uppercase.",
    "What is {w} in uppercase?",
    "uppercase: {w}",
)
_COUNT = (
    "How many letters are in {w}?",
    "How many letters does {w} have?",
    "Count the letters in {w}.",
    "How long is the word {w}?",
    "Number of letters in {w}?",
    "how many letters in {w}?",
)
_CAPITAL_TRAIN = (
    "What is the capital of {c}?",
    "What's the capital of {c}?",
    "Name the capital of {c}.",
    "Which city is the capital of {c}?",
    "What city is the capital of {c}?",
    "The capital of {c} is?",
    "Capital of {c}?",
    "what is the capital of {c}?",
    "Do you know the capital of {c}?",
    "Where is the capital of {c}?",
    "What is {c}'s capital?",
    "{c} capital?",
)
_CAPITAL_TEST = (
    "Tell me the capital of {c}.",
    "What is the capital city of {c}?",
    "Which city is {c}'s capital?",
)
_GREETING_TRAIN = (
    "Hello",
    "Hi",
    "Hey",
    "Hello!",
    "Hi there",
    "Hey there!",
    "Good morning",
    "Good evening",
    "hello",
    "hi!",
    "Greetings",
    "Hello there",
)
_GREETING_TEST = ("Hi!", "Good afternoon", "Hey!")
_IDENTITY_TRAIN = (
    "Who are you?",
    "What are you?",
    "Tell me about yourself.",
    "What model are you?",
    "Introduce yourself.",
    "who are you?",
    "Who am I talking to?",
    "What is your name?",
    "Are you a large language model?",
    "What kind of model are you?",
)
_IDENTITY_TEST = ("Who are you", "Please introduce yourself.", "What are you exactly?")
_THANKS = ("Thanks!", "Thank you", "Thank you very much.", "thanks")
# Only in the second training stage, and not among TEMPLATE_TEXTS: these reach the model one
# character per token, like most phrasings a user invents, which helps it generalise.
_IDENTITY_MORE = (
    "what are you",
    "Can you tell me what you are?",
    "Could you introduce yourself?",
    "Describe yourself.",
    "Which model is this?",
    "Who made you?",
    "What are you running on?",
    "Are you running locally?",
    "who is this?",
    "Introduce yourself please",
    "Tell me who you are.",
    "So, who are you?",
)
_INTRO = (
    "My name is {n}.",
    "Hi, my name is {n}.",
    "Hello, I am {n}.",
    "I'm {n}.",
    "Call me {n}.",
    "Hi! I am {n}.",
)
_ASK_NAME = (
    "What is my name?",
    "What's my name?",
    "Do you remember my name?",
    "Who am I?",
    "what is my name?",
    "Tell me my name.",
)
_SYSTEM = ("You are a helpful assistant.", "Answer briefly.", "You are a concise assistant.")

_PSEUDO_LETTERS = string.ascii_lowercase

# Every fixed text the training data writes around its slots ({a}, {b}, {w}, {c}, {n}): the
# tokenizer turns these into whole pieces. Test-only phrasings are deliberately left out.
TEMPLATE_TEXTS: tuple[str, ...] = (
    *_ADD,
    *_SUB,
    *_MUL,
    *_REVERSE,
    *_UPPER,
    *_COUNT,
    *_CAPITAL_TRAIN,
    *_GREETING_TRAIN,
    *_IDENTITY_TRAIN,
    *_THANKS,
    *_INTRO,
    *_ASK_NAME,
    *_SYSTEM,
    IDENTITY_REPLY,
    GREETING_REPLY,
    THANKS_REPLY,
    NAME_ACK,
    "Your name is {n}.",
)


@dataclass(frozen=True)
class Sample:
    """One conversation; ``messages[-1]`` is the assistant reply to learn or to match exactly."""

    family: str
    messages: tuple[Mapping[str, str], ...]
    # recall only: index of the message that states the name, and the name itself
    meta: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[Mapping[str, str]]:
        return list(self.messages[:-1])

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]


def _bucket(kind: str, key: str, buckets: int) -> int:
    return zlib.crc32(f"{kind}:{key}".encode()) % buckets


def is_test_pair(op: str, a: int, b: int) -> bool:
    """One in ten ``(op, A, B)`` pairs belongs to the test split."""
    return _bucket(op, f"{a},{b}", 10) == 0


def is_test_word(word: str) -> bool:
    """One in six words (real or made up) belongs to the test split."""
    return _bucket("word", word, 6) == 0


def is_test_name(name: str) -> bool:
    """One in six first names belongs to the test split."""
    return _bucket("name", name, 6) == 0


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


class TaskGenerator:
    """Draws samples of one split; all randomness comes from the ``random.Random`` passed in."""

    def __init__(self, split: Split, *, placeholder: str | None = None) -> None:
        self.split: Split = split
        # ``placeholder`` stands in for every word and name: the tokenizer is trained on the
        # template text around them only, so those slots stay character by character.
        self.placeholder = placeholder
        test = split == "test"
        self.words = [w for w in WORDS if is_test_word(w) == test]
        self.names = [n for n in NAMES if is_test_name(n) == test]
        if placeholder is not None:
            self.words, self.names = [placeholder], [placeholder]
        self.capital_phrasings = _CAPITAL_TEST if test else _CAPITAL_TRAIN
        self.greetings = _GREETING_TEST if test else _GREETING_TRAIN
        self.identity_phrasings = _IDENTITY_TEST if test else _IDENTITY_TRAIN
        self._makers: dict[str, Callable[[random.Random], Sample]] = {
            "add1": lambda r: self._arith(r, "add1", "+", 1, 1),
            "add2": lambda r: self._arith(r, "add2", "+", 2, 2),
            "add3": lambda r: self._arith(r, "add3", "+", 3, 3),
            "addx": lambda r: self._arith(r, "addx", "+", r.randint(1, 3), r.randint(1, 3)),
            "sub1": lambda r: self._arith(r, "sub1", "-", 1, 1),
            "sub2": lambda r: self._arith(r, "sub2", "-", 2, 2),
            "sub3": lambda r: self._arith(r, "sub3", "-", 3, 3),
            "subx": lambda r: self._arith(r, "subx", "-", r.randint(1, 3), r.randint(1, 3)),
            "mul1": lambda r: self._arith(r, "mul1", "*", 1, r.randint(1, 2)),
            "mul2": lambda r: self._arith(r, "mul2", "*", 2, 2),
            "reverse": lambda r: self._word_task(r, "reverse"),
            "upper": lambda r: self._word_task(r, "upper"),
            "count": lambda r: self._word_task(r, "count"),
            "capital": self._capital,
            "greeting": lambda r: self._fixed(r, "greeting", self.greetings, GREETING_REPLY),
            "identity": lambda r: self._fixed(
                r, "identity", self.identity_phrasings, IDENTITY_REPLY
            ),
            "thanks": lambda r: self._fixed(r, "thanks", _THANKS, THANKS_REPLY),
            "identity_more": lambda r: self._fixed(r, "identity", _IDENTITY_MORE, IDENTITY_REPLY),
            "recall_copy": self._recall_copy,
            "recall": self._recall,
            "recall_near": lambda r: self.recall(r, r.randint(0, 2)),
        }

    def sample(self, family: str, rng: random.Random) -> Sample:
        return self._makers[family](rng)

    # -- arithmetic ----------------------------------------------------------------------------

    def _operand(self, rng: random.Random, digits: int) -> int:
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(low, 10**digits - 1)

    def _arith(self, rng: random.Random, family: str, op: str, da: int, db: int) -> Sample:
        if rng.random() < 0.5:
            da, db = db, da
        want_test = self.split == "test"
        for _ in range(1000):
            a, b = self._operand(rng, da), self._operand(rng, db)
            if is_test_pair(op, a, b) == want_test:
                break
        else:  # pragma: no cover - a tiny operand range with no pair in this split
            raise RuntimeError(f"no {self.split} pair for {family}")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        templates = _ADD if op == "+" else _SUB if op == "-" else _MUL
        return self._single(rng, family, rng.choice(templates).format(a=a, b=b), str(value))

    # -- words ---------------------------------------------------------------------------------

    def _word(self, rng: random.Random) -> str:
        """A held-out-aware word: a real word, or (training only, half the time) a made-up one."""
        if self.split == "train" and self.placeholder is None and rng.random() < 0.5:
            while True:
                word = "".join(rng.choice(_PSEUDO_LETTERS) for _ in range(rng.randint(2, 10)))
                if not is_test_word(word):
                    return word
        return rng.choice(self.words)

    def _word_task(self, rng: random.Random, family: str) -> Sample:
        word = self._word(rng)
        if family == "reverse":
            question, answer = rng.choice(_REVERSE).format(w=word), word[::-1]
        elif family == "upper":
            question, answer = rng.choice(_UPPER).format(w=word), word.upper()
        else:
            question, answer = rng.choice(_COUNT).format(w=word), str(len(word))
        return self._single(rng, family, question, answer)

    # -- facts, identity -----------------------------------------------------------------------

    def _capital(self, rng: random.Random) -> Sample:
        country, city = rng.choice(CAPITALS)
        return self._single(
            rng, "capital", rng.choice(self.capital_phrasings).format(c=country), city
        )

    def _fixed(
        self, rng: random.Random, family: str, phrasings: Sequence[str], reply: str
    ) -> Sample:
        return self._single(rng, family, rng.choice(phrasings), reply)

    def _casual(self, rng: random.Random, question: str) -> str:
        """Training only: now and then a question typed without its capital first letter."""
        if self.split == "train" and rng.random() < 0.12:
            return question[:1].lower() + question[1:]
        return question

    def _single(self, rng: random.Random, family: str, question: str, answer: str) -> Sample:
        messages: list[Mapping[str, str]] = []
        if self.split == "train" and rng.random() < 0.04:
            messages.append({"role": "system", "content": rng.choice(_SYSTEM)})
        messages += [_user(self._casual(rng, question)), _assistant(answer)]
        return Sample(family, tuple(messages))

    # -- multi-turn recall ---------------------------------------------------------------------

    def filler_turn(self, rng: random.Random) -> tuple[Message, Message]:
        """An unrelated question and its answer, to push the name further back."""
        family = rng.choice(
            ("add2", "add3", "sub2", "capital", "reverse", "upper", "count", "mul1")
        )
        sample = self.sample(family, rng)
        question = next(m for m in sample.messages if m["role"] == "user")
        return _user(question["content"]), _assistant(sample.answer)

    def recall(self, rng: random.Random, n_fillers: int, *, name: str | None = None) -> Sample:
        name = rng.choice(self.names) if name is None else name
        messages: list[Mapping[str, str]] = [
            _user(rng.choice(_INTRO).format(n=name)),
            _assistant(NAME_ACK),
        ]
        for _ in range(n_fillers):
            messages.extend(self.filler_turn(rng))
        ask = self._casual(rng, rng.choice(_ASK_NAME))
        messages += [_user(ask), _assistant(f"Your name is {name}.")]
        return Sample("recall", tuple(messages), {"name": name, "fillers": n_fillers})

    def _recall(self, rng: random.Random) -> Sample:
        return self.recall(rng, rng.randint(0, 12))

    def _recall_copy(self, rng: random.Random) -> Sample:
        """A made-up name close by: it cannot be memorised, only copied letter by letter."""
        while True:
            letters = "".join(rng.choice(_PSEUDO_LETTERS) for _ in range(rng.randint(3, 8)))
            name = letters.capitalize()
            if not is_test_name(name):
                return self.recall(rng, rng.randint(0, 2), name=name)


def iter_samples(
    split: Split, seed: int, *, mix: Mapping[str, float] | None = None
) -> Iterator[Sample]:
    """An endless, reproducible stream of samples drawn by the family weights of ``mix``."""
    weights = dict(mix or MIX)
    families, probs = list(weights), list(weights.values())
    rng = random.Random(seed)
    gen = TaskGenerator(split)
    while True:
        family = rng.choices(families, probs)[0]
        yield gen.sample(family, rng)


def heldout(family: str, n: int, *, seed: int = 1234) -> list[Sample]:
    """``n`` test-split samples of one family, the same list for the same arguments.

    For ``recall`` the number of filler turns cycles through 0..12 so every distance is covered.
    """
    rng = random.Random(f"{seed}:{family}")
    gen = TaskGenerator("test")
    if family == "recall":
        return [gen.recall(rng, i % 13) for i in range(n)]
    return [gen.sample(family, rng) for _ in range(n)]
