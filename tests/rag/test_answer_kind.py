"""The kind of value a question asks for, and the window that states it (rag.answer_kind)."""

import pytest

from rag.answer_kind import asked, describe, states
from rag.evidence import select
from tests.fakes import HashEmbedder
from tests.rag.test_evidence import chunk

LICENCE = (
    "There are two editions: Ledger Core at £420 per named user per year, and Ledger Enterprise at £690 per named "
    "user per year. Licences are renewed every year in March. Each licence covers production and staging."
)


@pytest.mark.parametrize(
    ("question", "kinds"),
    [
        ("What is the maximum number of named users on a Ledger Core licence?", "maximum"),
        ("How much does a commercial support contract cost?", "price"),
        ("How many requests per second can the event MPM serve?", "rate"),
        ("How many megabytes of RAM does a prefork child use?", "size"),
        ("On what date was httpd 2.4.58 released?", "date"),
        ("Which cloud region hosts Ardent Cloud Ledger?", "region"),
        ("What TCP port does git daemon listen on by default?", "port"),
        ("What is the server address of the VPN gateway?", "address"),
        ("What is the minimum price of a licence?", "minimum and price"),
    ],
)
def test_questions_that_ask_for_a_kind_of_value(question, kinds):
    assert describe(asked(question)) == kinds


@pytest.mark.parametrize(
    "question",
    [
        "Who is the current VP Engineering?",  # a role or a name has no surface form to check
        "With htpasswd -B, what range of values does the -C bcrypt cost option accept?",  # a parameter's name
        "What TLS feature lets several name-based hosts share one IP address and port?",  # asks for a feature
        "Which config variable sets the SMTP port that git send-email connects to?",  # asks for a variable
        "How long must passphrases be?",
    ],
)
def test_questions_that_ask_for_no_checked_kind(question):
    assert asked(question) == ()


def test_a_window_states_a_kind_by_its_surface_form():
    maximum, price = asked("What is the maximum price?")
    assert states([price], "Ledger Core at £420 per named user per year") and not states([maximum], LICENCE)
    assert states([maximum], "Up to 250 named users") and states([maximum], "MaxRequestWorkers 256")
    (date,) = asked("On what date does the licence renew?")
    assert states([date], "renewed every year in March") and not states([date], "an expiry date is computed")
    assert states([], "anything")  # nothing asked: nothing to state


def test_the_best_window_that_states_the_kind_goes_first():
    question = "What is the maximum number of named users on a Ledger Core licence?"
    text = LICENCE + " A Ledger Core licence allows up to 250 named users."
    evidence = select(question, [chunk(text)], HashEmbedder(), max_windows=3, lexical_weight=0.5, kind_depth=100)
    assert evidence.kind_stated and evidence.best.text == "A Ledger Core licence allows up to 250 named users."
    evidence = select(question, [chunk(LICENCE)], HashEmbedder(), max_windows=3, lexical_weight=0.5, kind_depth=3)
    assert not evidence.kind_stated and describe(evidence.kinds) == "maximum"
    off = select(question, [chunk(LICENCE)], HashEmbedder(), max_windows=3, lexical_weight=0.5, kind_depth=0)
    assert off.kind_stated and off.kinds == ()
