"""The answer service over fakes: refusal, streaming, citations."""

from pathlib import Path

from rag.answering import TextDelta
from rag.schemas import Answer


def ingest(container, folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    report = container.ingest_service().ingest_paths([folder], acl=["public"])
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
    # The default answer quotes the evidence: no generation, and the quote is exact, at its offsets.
    citation = final.citations[0]
    assert citation.quote == "Full-time staff get 26 days of annual leave per year."
    assert citation.text[citation.quote_start : citation.quote_end] == citation.quote
    assert final.support == "verified" and final.failed_claims == [] and final.repair == "none"
    assert fake_container.engine.calls == [] and final.model == "echo"


def test_generate_mode_streams_a_checked_draft(fake_container, tmp_path):
    fake_container.settings.prompt.answer = "generate"
    ingest(fake_container, tmp_path / "docs", {"leave.md": "# Leave\n\nFull-time staff get 26 days of annual leave.\n"})
    events = list(fake_container.answers.stream("How many days of annual leave do full-time staff get?"))
    final = events[-1]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == final.answer
    assert final.found and "26 days" in final.answer and final.usage.completion_tokens > 0
    assert final.support == "verified" and final.repair == "none"
    assert final.citations[0].quote == "Full-time staff get 26 days of annual leave."


def test_unrelated_question_is_declined(fake_container, tmp_path):
    ingest(fake_container, tmp_path / "docs", {"it.md": "# IT\n\nPassphrases must be at least 14 characters.\n"})
    answer = fake_container.answers.answer("What colour is the sky on Mars at dusk?")
    assert not answer.found and answer.citations == []


def scripted(fake_container, reply: str, **prompt):
    """The fake container with a model that always says ``reply``, in generate mode."""
    from tests.fakes import ScriptedEngine

    fake_container.engine = ScriptedEngine(reply)
    fake_container.answers.engine = fake_container.engine
    fake_container.settings.prompt.answer = "generate"
    for key, value in prompt.items():
        setattr(fake_container.settings.prompt, key, value)
    return fake_container


WORK_MEM = {
    "memory.md": (
        "# Resource consumption\n\nwork_mem (integer)\n\nSets the base maximum amount of memory to be used "
        "by a query operation. The default is four megabytes (4MB).\n"
    )
}


def test_an_invented_value_is_never_shown_the_passage_is_quoted_instead(fake_container, tmp_path):
    scripted(fake_container, "The default value of work_mem is 100 [1]")
    ingest(fake_container, tmp_path / "docs", WORK_MEM)
    events = list(fake_container.answers.stream("What is the default value of work_mem?"))
    final = events[-1]
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "100" not in streamed and "100" not in final.answer  # not even streamed before the check
    assert final.found and final.repair == "quoted"
    assert final.support == "unverified" and final.failed_claims == ["100"]
    assert "four megabytes (4MB)" in final.answer
    citation = final.citations[0]
    assert citation.attributed == "quote" and citation.quote == "The default is four megabytes (4MB)."
    assert citation.text[citation.quote_start : citation.quote_end] == citation.quote


def test_an_invented_value_is_refused_when_so_configured(fake_container, tmp_path):
    scripted(fake_container, "It is 100 MB.", unsupported="refuse")
    ingest(fake_container, tmp_path / "docs", WORK_MEM)
    final = fake_container.answers.answer("What is the default value of work_mem?")
    assert not final.found and final.answer == fake_container.settings.prompt.refusal
    assert final.citations == [] and final.repair == "refused" and final.failed_claims == ["100 MB"]


def test_a_supported_draft_is_shown_as_written_with_its_quote(fake_container, tmp_path):
    scripted(fake_container, "The default is 4MB.")
    ingest(fake_container, tmp_path / "docs", WORK_MEM)
    final = fake_container.answers.answer("What is the default value of work_mem?")
    assert final.answer == "The default is 4MB. [1]" and final.support == "verified" and final.repair == "none"
    assert final.citations[0].quote == "The default is four megabytes (4MB)."


def test_a_model_that_emits_only_markup_gets_the_passage_quoted(fake_container, tmp_path):
    scripted(fake_container, "<p></p> [1] **")
    ingest(fake_container, tmp_path / "docs", WORK_MEM)
    final = fake_container.answers.answer("What is the default value of work_mem?")
    assert final.found and final.repair == "quoted" and "<p>" not in final.answer
    assert "four megabytes" in final.answer


def test_a_question_about_something_the_documents_never_name_is_declined(fake_container, tmp_path):
    ingest(fake_container, tmp_path / "docs", WORK_MEM)
    final = fake_container.answers.answer("What is the default value of maintenance_work_mem?")
    assert not final.found and "maintenance_work_mem" in final.declined
    assert fake_container.engine.calls == []


def test_an_answer_without_a_supporting_unit_gets_no_quote():
    from rag.answer_checks import supporting_span

    assert supporting_span("26 days", "", None) == (None, None)
    assert supporting_span("bananas", "Passphrases must be long.", None) == (None, None)
    assert supporting_span("26 days", "Staff get 26 days. Bank holidays are extra.", None) == (0, 18)


def test_a_question_for_a_maximum_the_documents_never_state_is_declined(fake_container, tmp_path):
    licensing = (
        "# Ledger licensing\n\nThere are two editions: Ledger Core at £420 per named user per year, and Ledger "
        "Enterprise at £690 per named user per year.\n"
    )
    ingest(fake_container, tmp_path / "docs", {"licensing.md": licensing})
    final = fake_container.answers.answer("What is the maximum number of named users on a Ledger Core licence?")
    assert not final.found and "maximum" in final.declined and final.citations == []
    # The same passage answers the question it does answer.
    final = fake_container.answers.answer("What does a Ledger Core licence cost per named user?")
    assert final.found and "£420" in final.answer
