import pytest

from rag.citations import MarkerFilter, attribute_by_overlap, cited_indices
from rag.prompting import ContextSource
from rag.schemas import RetrievedChunk


def stream_through(pieces: list[str], valid: set[int]) -> str:
    markers = MarkerFilter(valid)
    return "".join(markers.feed(p) for p in pieces) + markers.flush()


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Leave is 26 days [1]."], "Leave is 26 days [1]."),
        (["Leave is 26 days [", "1", "]."], "Leave is 26 days [1]."),
        (["Leave is 26 days [7]."], "Leave is 26 days ."),  # no source 7: the marker goes
        (["See [", "note] here"], "See [note] here"),  # not a marker: text kept
        (["Ends with [2"], "Ends with [2"),  # unclosed at the end: flushed as text
        (["[1][2][3]"], "[1][2]"),
    ],
)
def test_marker_filter_keeps_only_valid_markers_even_when_split(pieces, expected):
    assert stream_through(pieces, {1, 2}) == expected


def test_cited_indices_in_order_without_repeats():
    assert cited_indices("a [2] b [1] c [2]") == [2, 1]


def _source(index: int, text: str) -> ContextSource:
    chunk = RetrievedChunk(id=f"c{index}", text=text, score=0.5, metadata={})
    return ContextSource(index, chunk, text)


def test_overlap_attribution_picks_the_source_sharing_content_words():
    sources = [
        _source(1, "Passphrases must be at least 14 characters long."),
        _source(2, "Expense claims are due within 30 days."),
    ]
    assert attribute_by_overlap("Expense claims are due within 30 days [x]", sources) == " [2]"
    assert attribute_by_overlap("A passphrase needs 14 characters. Claims are due in 30 days.", sources) == " [1][2]"


def test_overlap_attribution_gives_nothing_without_shared_words():
    assert attribute_by_overlap("Bananas are yellow.", [_source(1, "Passphrases must be long.")]) == ""
