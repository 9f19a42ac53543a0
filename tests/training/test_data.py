"""The synthetic instruct data, its tokenizer and the training batches of the bundled model."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from bedrock_mistral.prompt import format_prompt
from local_backend.tokenizer import Tokenizer
from training.data import (
    EVAL_FAMILIES,
    FAMILIES,
    IDENTITY_REPLY,
    TaskGenerator,
    heldout,
    is_test_name,
    is_test_pair,
    is_test_word,
    iter_samples,
)
from training.data_lists import CAPITALS
from training.sp_tokenizer import keep_piece, train_tokenizer
from training.train import TrainConfig, encode_sample, load_balancing_loss, make_batch

_ARITH = re.compile(r"(\d+)\D+?(\d+)")


def _take(split: str, seed: int, n: int) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    stream = iter_samples(split, seed)  # type: ignore[arg-type]
    out = []
    for _ in range(n):
        sample = next(stream)
        out.append((sample.family, tuple((m["role"], m["content"]) for m in sample.messages)))
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return Tokenizer.from_file(train_tokenizer(path))


def test_generator_is_deterministic_per_seed() -> None:
    assert _take("train", 7, 300) == _take("train", 7, 300)
    assert _take("train", 7, 300) != _take("train", 8, 300)
    assert [s.messages for s in heldout("add3", 30)] == [s.messages for s in heldout("add3", 30)]


def test_every_family_is_drawn_and_ends_with_the_reply() -> None:
    samples = list(_take("train", 1, 3000))
    assert set(FAMILIES) == {family for family, _ in samples}
    for _, messages in samples:
        assert messages[-1][0] == "assistant" and messages[-2][0] == "user"


def _operands(question: str) -> tuple[int, int]:
    match = _ARITH.search(question)
    assert match, question
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("family", ["add2", "add3", "sub2", "sub3", "mul1", "mul2"])
def test_arithmetic_answers_are_right_and_splits_disjoint(family: str) -> None:
    op = {"add": "+", "sub": "-", "mul": "*"}[family[:3]]
    rng = random.Random(0)
    seen: dict[str, set[tuple[int, int]]] = {}
    for split in ("train", "test"):
        gen = TaskGenerator(split)  # type: ignore[arg-type]
        pairs = set()
        for _ in range(400):
            sample = gen.sample(family, rng)
            question = sample.messages[-2]["content"]
            a, b = _operands(question)
            if question.lower().startswith("subtract"):  # "Subtract B from A"
                a, b = b, a
            expected = a + b if op == "+" else a - b if op == "-" else a * b
            assert sample.answer == str(expected), question
            assert is_test_pair(op, a, b) == (split == "test")
            pairs.add((a, b))
        seen[split] = pairs
    assert not seen["train"] & seen["test"]


def test_negative_results_occur() -> None:
    answers = [s.answer for s in heldout("sub2", 100)]
    assert any(a.startswith("-") for a in answers) and any(not a.startswith("-") for a in answers)


def test_word_and_name_splits_do_not_overlap() -> None:
    train = TaskGenerator("train")
    test = TaskGenerator("test")
    assert train.words and test.words and not set(train.words) & set(test.words)
    assert train.names and test.names and not set(train.names) & set(test.names)
    rng = random.Random(3)
    for family in ("reverse", "upper"):  # the slot word can be read back from the answer
        for _ in range(300):
            answer = train.sample(family, rng).answer
            word = answer[::-1] if family == "reverse" else answer.lower()
            assert not is_test_word(word) and word not in test.words
    for sample in heldout("recall", 40):
        assert is_test_name(str(sample.meta["name"]))
        assert sample.answer == f"Your name is {sample.meta['name']}."


def test_capitals_cover_fifty_countries_with_heldout_phrasings() -> None:
    assert len({c for c, _ in CAPITALS}) >= 50
    rng = random.Random(0)
    train_questions = {
        TaskGenerator("train").sample("capital", rng).messages[-2]["content"] for _ in range(2000)
    }
    for sample in heldout("capital", 100):
        assert sample.messages[-2]["content"] not in train_questions
        assert (
            sample.answer
            == dict(CAPITALS)[next(c for c, _ in CAPITALS if c in sample.messages[-2]["content"])]
        )
    assert all(s.answer == IDENTITY_REPLY for s in heldout("identity", 10))


def test_heldout_recall_spans_beyond_the_window() -> None:
    fillers = Counter(int(s.meta["fillers"]) for s in heldout("recall", 26))
    assert set(fillers) == set(range(13))


@pytest.mark.parametrize(
    "piece,keep",
    [
        ("▁What▁is▁the▁capital▁of", True),
        ("▁Paris", True),
        ("▁backwards.", True),
        ("▁the", False),
        ("ers", False),
        ("▁from▁", False),
        ("▁AB", False),
        ("TABLE", False),
        ("'s▁capital?", True),
        ("▁I▁am", True),
        ("▁", True),
        ("e", True),
    ],
)
def test_keep_piece_rejects_pieces_that_could_split_a_word(piece: str, keep: bool) -> None:
    assert keep_piece(piece) is keep


def test_tokenizer_splits_variable_words_and_digits_into_characters(tokenizer: Tokenizer) -> None:
    for sample in heldout("reverse", 60) + heldout("upper", 60):
        word = sample.answer[::-1] if sample.family == "reverse" else sample.answer.lower()
        question = sample.messages[-2]["content"]
        pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode(question)]
        runs = [pieces[i : i + len(word) + 1] for i in range(len(pieces))]
        assert ["▁", *word] in runs, (word, pieces)
        answer_pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode(sample.answer)]
        assert answer_pieces == ["▁", *sample.answer], answer_pieces
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("What is 1234 + 987?")]
    assert [p for p in pieces if p.isdigit()] == list("1234987")
    assert tokenizer.decode(tokenizer.encode("naïve ünïcode ✓")) == "naïve ünïcode ✓"


def test_tokenizer_training_reproduces_the_shipped_tokenizer(tokenizer: Tokenizer) -> None:
    shipped = Path(__file__).resolve().parents[2] / "local_backend" / "weights" / "tokenizer.model"
    assert tokenizer.path is not None
    assert Path(tokenizer.path).read_bytes() == shipped.read_bytes()


def test_loss_mask_covers_exactly_the_assistant_replies(tokenizer: Tokenizer) -> None:
    inst_close = tokenizer.encode("[/INST]")[-1]
    for sample in heldout("recall", 5) + heldout("add2", 5) + heldout("identity", 2):
        ids, mask = encode_sample(tokenizer, sample, inst_close)
        assert ids == tokenizer.encode_prompt(format_prompt(list(sample.messages)))
        replies = [m["content"] for m in sample.messages if m["role"] == "assistant"]
        spans: list[list[int]] = [[]]
        for token, masked in zip(ids, mask, strict=True):
            if masked:
                spans[-1].append(token)
                if token == tokenizer.eos_id:
                    spans.append([])
        assert [tokenizer.decode(s[:-1]) for s in spans[:-1]] == replies
        assert all(s[-1] == tokenizer.eos_id for s in spans[:-1])


def test_batches_are_a_function_of_the_step(tokenizer: Tokenizer) -> None:
    cfg = TrainConfig(seq_len=128, batch_size=4)
    inst_close = tokenizer.encode("[/INST]")[-1]
    x1, y1 = make_batch(5, cfg, tokenizer, inst_close)
    x2, y2 = make_batch(5, cfg, tokenizer, inst_close)
    x3, _ = make_batch(6, cfg, tokenizer, inst_close)
    assert x1.shape == y1.shape == (4, 128)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    # targets are the next token wherever there is a loss
    has_loss = y1[:, :-1] != -100
    assert torch.equal(y1[:, :-1][has_loss], x1[:, 1:][has_loss])
    assert 0.1 < float((y1 != -100).float().mean()) < 0.6


def test_load_balancing_loss_is_one_when_uniform_and_grows_when_collapsed() -> None:
    uniform = torch.zeros(64, 4)
    uniform[:, :] = torch.randn(64, 4) * 1e-4
    collapsed = torch.tensor([[5.0, 4.0, 0.0, 0.0]]).repeat(64, 1)
    assert load_balancing_loss([uniform], 2).item() == pytest.approx(1.0, abs=0.05)
    assert load_balancing_loss([collapsed], 2).item() > 1.5


def test_eval_families_are_generated() -> None:
    for family in EVAL_FAMILIES:
        assert len(heldout(family, 3)) == 3
