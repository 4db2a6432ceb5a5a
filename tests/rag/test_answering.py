"""The answer service over fakes: refusal, streaming, citations."""

from pathlib import Path

from ingest.pipeline import IngestService
from rag.answering import TextDelta
from rag.schemas import Answer


def ingest(container, folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    report = IngestService(container.embedder, container.store, container.settings.chunking).ingest_paths([folder])
    assert report.ok, report.summary()


def test_empty_store_declines_without_calling_the_model(fake_container):
    answer = fake_container.answers.answer("How many days of leave do I get?")
    assert not answer.found
    assert answer.answer == fake_container.settings.prompt.refusal
    assert answer.citations == [] and fake_container.engine.calls == []


def test_stream_deltas_add_up_to_the_final_answer_and_cite_the_source(fake_container, tmp_path):
    ingest(
        fake_container,
        tmp_path / "docs",
        {
            "leave.md": "# Leave\n\nFull-time staff get 26 days of annual leave per year. Bank holidays are extra.\n",
            "it.md": "# IT\n\nPassphrases must be at least 14 characters long.\n",
        },
    )
    events = list(fake_container.answers.stream("How many days of annual leave do full-time staff get per year?"))
    final = events[-1]
    assert isinstance(final, Answer)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed.strip() == final.answer
    assert final.found and "26 days" in final.answer
    assert [c.index for c in final.citations] == [1]
    assert final.citations[0].source.endswith("leave.md")
    assert final.citations[0].title == "Leave"
    assert "[1]" in final.answer
    assert final.usage.completion_tokens > 0 and final.model == "echo"


def test_unrelated_question_is_declined(fake_container, tmp_path):
    ingest(fake_container, tmp_path / "docs", {"it.md": "# IT\n\nPassphrases must be at least 14 characters.\n"})
    answer = fake_container.answers.answer("What colour is the sky on Mars at dusk?")
    assert not answer.found and answer.citations == []
