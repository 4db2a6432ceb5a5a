"""The claims check: values an answer states must be in the passages it cites."""

import pytest

from rag.verify import check, claims, is_markup_only

WORK_MEM = "work_mem (integer)\nSets the base maximum amount of memory to be used. The default is four megabytes (4MB)."


def texts(answer: str, question: str = "") -> list[tuple[str, str]]:
    return [(c.text, c.kind) for c in claims(answer, question)]


def test_claims_are_numbers_with_units_identifiers_quoted_texts_and_names():
    assert texts("Acknowledge the page within 5 minutes.") == [("5 minutes", "number")]
    assert texts("Set KeepAliveTimeout in /etc/apache2/apache2.conf and run git commit --amend") == [
        ("KeepAliveTimeout", "identifier"),
        ("/etc/apache2/apache2.conf", "identifier"),
        ("--amend", "identifier"),
    ]
    assert texts('It is called "Beacon" and costs $1,200 (20%).') == [
        ("Beacon", "quote"),
        ("1200", "number"),
        ("20%", "number"),
    ]
    assert texts("Ask Maria Lopez in Leeds.") == [("Maria Lopez", "name"), ("Leeds", "name")]
    assert texts("Version 2.4.58 of SEV1 runbooks") == [("2.4.58", "number"), ("SEV1", "identifier")]
    # What the question already names is not a claim of the answer; nor is a sentence's first word.
    assert texts("The work_mem default is 4MB.", "What is the default of work_mem?") == [("4 MB", "number")]
    assert texts("e.g. the value, i.e. this") == []


@pytest.mark.parametrize(
    ("answer", "support", "failed"),
    [
        ("The default value of work_mem is 100", "unverified", ["100"]),  # the invented value
        ("The default is 4MB.", "verified", []),
        ("The default is four megabytes.", "verified", []),  # number words are digits
        ("The default is 4 MB, set with work_mem", "verified", []),
        ("The default is 4MB, or 8MB on Windows.", "partial", ["8 MB", "Windows"]),
        ("A uuid value takes 4 bytes.", "unverified", ["4 bytes"]),  # 4 is there, bytes is not
    ],
)
def test_check_against_the_cited_passage(answer, support, failed):
    result = check(answer, [WORK_MEM], "What is the default value of work_mem?")
    assert result.support == support
    assert [c.text for c in result.failed] == failed


def test_a_number_with_a_unit_elsewhere_in_the_passage_holds():
    table = "| Description: | Amount of time the server will wait, in seconds |\n| Default: | KeepAliveTimeout 5 |"
    assert check("KeepAliveTimeout 5 seconds", [table]).support == "verified"
    assert check("KeepAliveTimeout 5 minutes", [table]).support == "partial"


def test_no_passage_or_no_shared_words_is_unverified():
    assert check("It is 5 minutes.", []).support == "unverified"
    assert check("It is 5 minutes.", ["", "   "]).support == "unverified"
    assert check("Bananas are yellow fruit", [WORK_MEM]).support == "unverified"  # no value, no shared word
    assert check("Sets the base maximum amount of memory", [WORK_MEM]).support == "verified"


def test_markup_only_output():
    assert is_markup_only("<p></p> [1] ** __ ---")
    assert is_markup_only("")
    assert not is_markup_only("<b>5 minutes</b>")
