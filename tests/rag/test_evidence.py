"""Evidence windows: units with offsets, their leads, and choosing the window that holds the answer."""

from rag.evidence import select, split_units
from rag.schemas import RetrievedChunk
from tests.fakes import HashEmbedder

MIXED = (
    "work_mem (integer)\n"
    "Sets the base maximum amount of memory to be used by a query operation. The default is four megabytes (4MB).\n"
    "The limits are:\n"
    "- SEV1: 5 minutes\n"
    "- SEV2: 15 minutes\n"
    "| Priority | Core response |\n"
    "| --- | --- |\n"
    "| P1 | 1 business hour |\n"
    "| P2 | 4 business hours |\n"
    "A sentence that was wrapped\n"
    "    in the HTML source, and one\n"
    "that was wrapped in plain text."
)


def chunk(text: str, heading: str = "", score: float = 0.5) -> RetrievedChunk:
    return RetrievedChunk(id=f"c{abs(hash(text))}", text=text, score=score, metadata={"title": "T", "heading": heading})


def test_units_are_exact_spans_with_their_leads():
    units = split_units(MIXED)
    for unit in units:
        assert MIXED[unit.start : unit.end] == unit.text
    by_text = {u.text: u for u in units}
    default = by_text["The default is four megabytes (4MB)."]
    assert units[default.lead].text == "work_mem (integer)"  # the term line gives the sentence its meaning
    assert units[by_text["- SEV2: 15 minutes"].lead].text == "The limits are:"  # a list item and its intro
    assert units[by_text["| P2 | 4 business hours |"].lead].text == "| Priority | Core response |"  # row, header
    wrapped = [u.text for u in units if u.text.startswith("A sentence")]
    assert wrapped == ["A sentence that was wrapped\n    in the HTML source, and one\nthat was wrapped in plain text."]


def test_the_window_that_holds_the_answer_is_chosen_with_its_lead():
    passages = [chunk("The planner uses statistics. Other settings exist."), chunk(MIXED, "Resource consumption")]
    evidence = select(
        "What is the default value of work_mem?", passages, HashEmbedder(), max_windows=2, lexical_weight=0.5
    )
    best = evidence.best
    assert passages[best.passage].text[best.start : best.end] == "The default is four megabytes (4MB)."
    assert best.text.startswith("work_mem (integer)\n")
    shown = evidence.text_of(best.passage)
    assert shown.startswith("work_mem (integer) ") and "The default is four megabytes (4MB)." in shown


def test_a_table_row_naming_what_is_asked_wins():
    evidence = select(
        "What is the Core response time for a P2 ticket?",
        [chunk(MIXED)],
        HashEmbedder(),
        max_windows=1,
        lexical_weight=0.5,
    )
    assert evidence.best.text.endswith("| P2 | 4 business hours |")


def test_chunks_without_text_are_skipped():
    evidence = select(
        "anything", [chunk(""), chunk("   \n  "), chunk("| --- |")], HashEmbedder(), max_windows=3, lexical_weight=0.5
    )
    assert evidence.windows == [] and evidence.best is None and evidence.chosen == {}
