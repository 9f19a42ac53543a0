"""Batch input parsing: every line becomes a record or a numbered problem; duplicates refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bedrock_mistral.batch.records import (
    BatchRecord,
    DuplicateIdError,
    InputProblem,
    check_unique,
    parse_items,
    read_input,
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_records_keep_ids_messages_prompts_params_and_metadata(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"id": "a", "prompt": "Hi", "max_tokens": 20, "stop": ["\n"]}),
            json.dumps(
                {
                    "id": 7,
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Why?"},
                    ],
                    "temperature": 0.2,
                    "metadata": {"label": "x"},
                }
            ),
        ],
    )
    parsed = read_input(path)
    assert parsed.problems == []
    first, second = parsed.records
    assert (first.id, first.prompt, first.messages, first.line) == ("a", "Hi", None, 1)
    assert first.params == {"max_tokens": 20, "stop": ["\n"]}
    assert second.id == 7 and second.key == "7" and second.line == 2
    assert second.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    )
    assert second.params == {"temperature": 0.2}
    assert second.metadata == {"label": "x"}


def test_a_single_stop_string_is_one_stop_sequence(tmp_path: Path) -> None:
    # As MistralClient(stop="...") and `batch -p stop=...` take it.
    line = json.dumps({"id": "s", "prompt": "x", "stop": "END"})
    path = write_lines(tmp_path / "in.jsonl", [line])
    parsed = read_input(path)
    assert parsed.problems == []
    assert parsed.records[0].params == {"stop": ["END"]}


@pytest.mark.parametrize(
    ("line", "message", "record_id"),
    [
        ("{not json", "not valid JSON", None),
        ("[1, 2]", "expected a JSON object", None),
        ('{"prompt": "no id"}', "missing 'id'", None),
        ('{"id": true, "prompt": "x"}', "'id' must be a string or an integer", None),
        ('{"id": "  ", "prompt": "x"}', "'id' is empty", None),
        (
            '{"id": "b", "prompt": "x", "messages": []}',
            "exactly one of 'messages' or 'prompt'",
            "b",
        ),
        ('{"id": "c"}', "exactly one of 'messages' or 'prompt'", "c"),
        ('{"id": "d", "prompt": ""}', "'prompt' must be a non-empty string", "d"),
        ('{"id": "e", "prompt": "x", "max_token": 5}', "unknown field(s) 'max_token'", "e"),
        ('{"id": "f", "prompt": "x", "temperature": "hot"}', "temperature", "f"),
        ('{"id": "g", "messages": [{"role": "bot", "content": "x"}]}', "role", "g"),
        ('{"id": "h", "messages": [{"role": "assistant", "content": "x"}]}', "user", "h"),
        ('{"id": "i", "messages": "hello"}', "'messages' must be a list", "i"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "no-id",
        "bool-id",
        "blank-id",
        "both",
        "neither",
        "empty-prompt",
        "unknown-field",
        "bad-param-type",
        "bad-role",
        "bad-order",
        "messages-not-list",
    ],
)
def test_bad_lines_become_problems_with_their_line_number(
    tmp_path: Path, line: str, message: str, record_id: str | None
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps({"id": "ok", "prompt": "fine"}), line])
    parsed = read_input(path)
    assert [r.id for r in parsed.records] == ["ok"]
    (problem,) = parsed.problems
    assert problem.line == 2
    assert message in problem.message
    assert problem.id == record_id


def test_text_file_one_prompt_per_line_ids_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbffirst prompt\r\n\nsecond {not json}\n  \nthird\n")
    parsed = read_input(path)
    assert [(r.id, r.prompt) for r in parsed.records] == [
        (1, "first prompt"),
        (3, "second {not json}"),
        (5, "third"),
    ]
    assert parsed.blank_lines == 2
    assert parsed.problems == []


def test_invalid_utf8_line_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"good\n\xff\xfe bad\n")
    parsed = read_input(path)
    assert [r.prompt for r in parsed.records] == ["good"]
    assert parsed.problems == [InputProblem(2, "not valid UTF-8", id=2)]


@pytest.mark.parametrize(
    ("name", "first", "read_as_json"),
    [
        ("data.jsonl", "plain text", True),
        ("data.txt", '{"id": 1, "prompt": "x"}', False),
        ("data.in", '{"id": 1, "prompt": "x"}', True),
        ("data.in", "What is {x}?", False),
    ],
    ids=["jsonl-extension", "txt-extension", "sniff-json", "sniff-text"],
)
def test_format_detection_by_extension_then_content(
    tmp_path: Path, name: str, first: str, read_as_json: bool
) -> None:
    parsed = read_input(write_lines(tmp_path / name, [first]))
    if not read_as_json:
        assert parsed.records == [BatchRecord(id=1, prompt=first, line=1)]
    elif first.startswith("{"):
        assert parsed.records == [BatchRecord(id=1, prompt="x", line=1)]
    else:
        assert "not valid JSON" in parsed.problems[0].message


def test_forced_text_format_reads_json_lines_as_prompts(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"id": 1}'])
    parsed = read_input(path, input_format="text")
    assert parsed.records == [BatchRecord(id=1, prompt='{"id": 1}', line=1)]


def test_duplicate_ids_are_refused_naming_every_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"id": "a", "prompt": "x"}),
            json.dumps({"id": 1, "prompt": "x"}),
            json.dumps({"id": "a", "prompt": "y"}),
            json.dumps({"id": "1", "prompt": "bad", "top_k": "many"}),  # a problem still has its id
        ],
    )
    parsed = read_input(path)
    with pytest.raises(DuplicateIdError) as info:
        check_unique(parsed)
    assert info.value.duplicates == {"a": [1, 3], "1": [2, 4]}
    assert "lines 1, 3" in str(info.value) and "nothing was sent" in str(info.value)


def test_sdk_items_accept_dicts_records_and_strings() -> None:
    record = BatchRecord(id="mine", prompt="hello")
    parsed = parse_items([{"id": "a", "prompt": "x"}, "just a prompt", record, {"prompt": "no id"}])
    assert [(r.id, r.line) for r in parsed.records] == [("a", 1), (1, 2), ("mine", None)]
    assert parsed.records[1].prompt == "just a prompt"
    (problem,) = parsed.problems
    assert problem.line == 4 and "missing 'id'" in problem.message
    check_unique(parsed)
