from pathlib import Path

import pytest

from eval.dataset import load_dataset
from rag.errors import InvalidRequestError
from tests.conftest import REPO


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_text_and_regex_references_and_defaults(tmp_path: Path):
    path = write(
        tmp_path,
        "# comment lines and blank lines are skipped",
        "",
        '{"id": "a", "question": "How many days?", "reference_answer": "26 days", "gold_sources": ["handbook.md"]}',
        '{"id": "b", "question": "When?", "reference_answer": {"regex": "09:?30"}}',
        '{"id": "c", "question": "Who is the CEO of Mars?", "answerable": false}',
    )
    a, b, c = load_dataset(path)
    assert (a.reference_text, a.reference_regex, a.gold_sources, a.answerable) == (
        "26 days",
        None,
        ["handbook.md"],
        True,
    )
    assert (b.reference_text, b.reference_regex) == (None, "09:?30")
    assert c.answerable is False and c.reference_answer is None and c.gold_sources == []


def test_every_problem_is_reported_with_its_line(tmp_path: Path):
    path = write(
        tmp_path,
        '{"id": "a", "question": "ok"}',
        "{not json",
        '{"id": "b"}',
        '{"id": "a", "question": "again"}',
        '{"id": "d", "question": "q", "reference_answer": {"regex": "(unclosed"}}',
        '{"id": "e", "question": "q", "typo_field": 1}',
    )
    with pytest.raises(InvalidRequestError) as caught:
        load_dataset(path)
    message = caught.value.message
    assert "5 problem(s)" in message
    assert "line 2: not valid JSON" in message
    assert "line 3: question: Field required" in message
    assert "line 4: id 'a' already used on line 1" in message
    assert "line 5" in message and "regular expression" in message
    assert "line 6: typo_field" in message


def test_missing_and_empty_files(tmp_path: Path):
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(InvalidRequestError, match="holds no questions"):
        load_dataset(write(tmp_path, "", "# nothing"))


def test_the_bundled_smoke_set_loads():
    items = load_dataset(REPO / "eval" / "datasets" / "sample_smoke.jsonl")
    assert len(items) == 24 and sum(not i.answerable for i in items) == 6
