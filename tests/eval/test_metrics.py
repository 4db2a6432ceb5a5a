"""Each metric against values worked out by hand, including the undefined cases (nan, not 0)."""

import math

import pytest

from eval import metrics as m

GOLD = ["handbook.md"]


def test_gold_label_matches_by_id_path_or_file_name():
    assert m.gold_label("/srv/docs/handbook.md", "abc123", ["handbook.md"]) == "handbook.md"
    assert m.gold_label("/srv/docs/handbook.md", "abc123", ["abc123"]) == "abc123"
    assert m.gold_label("/srv/docs/handbook.md", None, ["/srv/docs/handbook.md"]) == "/srv/docs/handbook.md"
    assert m.gold_label("/srv/docs/travel.md", "zzz", ["docs/handbook.md"]) is None
    assert m.is_gold("/srv/docs/handbook.md", None, ["other/handbook.md"])  # file names compare too


def test_hit_at_k():
    labels = [None, None, "handbook.md", None]
    assert m.hit_at_k(labels, GOLD, 2) == 0.0
    assert m.hit_at_k(labels, GOLD, 3) == 1.0
    assert math.isnan(m.hit_at_k(labels, [], 5))


def test_reciprocal_rank():
    assert m.reciprocal_rank([None, None, "handbook.md"], GOLD) == pytest.approx(1 / 3)
    assert m.reciprocal_rank(["handbook.md"], GOLD) == 1.0
    assert m.reciprocal_rank([None, None], GOLD) == 0.0
    assert math.isnan(m.reciprocal_rank([None], []))


def test_ndcg_counts_each_gold_document_once():
    gold = ["a.md", "b.md"]
    # ranks 1 and 3 relevant: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5; IDCG = 1 + 1/log2(3) = 1.6309
    assert m.ndcg_at_k(["a.md", None, "b.md"], gold) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # a second chunk of a.md adds nothing: DCG = 1, IDCG as above
    assert m.ndcg_at_k(["a.md", "a.md"], gold) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m.ndcg_at_k(["a.md", "b.md"], gold) == pytest.approx(1.0)
    assert m.ndcg_at_k([None] * 10 + ["a.md"], gold, k=10) == 0.0  # past the cut-off
    assert math.isnan(m.ndcg_at_k(["a.md"], []))


def test_exact_and_regex_match():
    assert m.exact_match("The answer is 26 days.", "answer is 26 days") == 1.0  # case, article, punctuation
    assert m.exact_match("27 days", "26 days") == 0.0
    assert m.exact_match("", "26 days") == 0.0
    assert math.isnan(m.exact_match("26 days", None))
    assert m.regex_match("Staff get 26 days of leave", r"\b26\s+days\b") == 1.0
    assert m.regex_match("STAFF GET TWENTY-SIX", r"twenty-six") == 1.0
    assert m.regex_match("", r"26") == 0.0
    assert math.isnan(m.regex_match("26", None))


def test_token_f1():
    # answer tokens: staff get 26 days (4); reference: 26 days of annual leave (5); common: 26, days (2)
    # precision 2/4, recall 2/5 -> F1 = 2 * 0.5 * 0.4 / 0.9 = 0.4444
    assert m.token_f1("Staff get 26 days", "26 days of annual leave") == pytest.approx(4 / 9)
    assert m.token_f1("", "26 days") == 0.0  # an empty answer scores 0, it is not undefined
    assert m.token_f1("anything", "") == 0.0
    assert m.token_f1("", "") == 1.0
    assert m.token_f1("nothing shared", "26 days") == 0.0
    assert math.isnan(m.token_f1("26 days", None))


def test_groundedness():
    cited = ["Staff get 26 days of annual leave per year.", "Book trips in TripDesk."]
    # sentence 1: content words {staff, get, 26, days, leave} all in the chunks -> supported
    # sentence 2: {parking, free, fridays} none -> unsupported; 1 of 2 = 0.5
    answer = "Staff get 26 days of leave [1]. Parking is free on Fridays."
    assert m.groundedness(answer, cited) == 0.5
    assert m.groundedness(answer, []) == 0.0  # nothing cited: nothing supported
    assert math.isnan(m.groundedness("", cited))  # no sentence to judge
    assert math.isnan(m.groundedness("[1]", cited))


def test_citation_precision_and_validity():
    assert m.citation_precision(["handbook.md", None, "handbook.md", None], GOLD) == 0.5
    assert math.isnan(m.citation_precision([], GOLD))
    assert math.isnan(m.citation_precision([None], []))
    assert m.citation_validity("See [1] and [3].", 3) == 1.0
    assert m.citation_validity("See [1] and [4].", 3) == 0.0
    assert m.citation_validity("See [0].", 3) == 0.0
    assert math.isnan(m.citation_validity("No markers here.", 3))
    assert m.citation_validity("See [2] and [5].", {2, 5}) == 1.0  # the indices the answer's citations resolved to
    assert m.citation_validity("See [2] and [3].", {2, 5}) == 0.0
    assert m.citation_validity("See [1].", set()) == 0.0


def test_reference_contained():
    assert m.reference_contained("Use Vaultshare [1].", "Vaultshare") == 1.0
    assert m.reference_contained("It is archived 14 days after resolution.", "14 days after resolution") == 1.0
    assert m.reference_contained("Within 14 days.", "4 days") == 0.0  # word boundaries: 14 is not 4
    assert m.reference_contained("", "Vaultshare") == 0.0  # an empty answer states nothing
    assert math.isnan(m.reference_contained("anything", None))
    assert math.isnan(m.reference_contained("anything", "the"))  # normalises to nothing: undefined


def test_abstention():
    refused = [True, False, True, False]
    answerable = [False, True, True, False]
    scores = m.abstention(refused, answerable)
    assert scores["accuracy"] == 0.5  # right on questions 1 and 2
    assert scores["correct_refusal_rate"] == 0.5  # 1 of the 2 unanswerable refused
    assert scores["false_refusal_rate"] == 0.5  # 1 of the 2 answerable refused
    only_answerable = m.abstention([False], [True])
    assert math.isnan(only_answerable["correct_refusal_rate"]) and only_answerable["false_refusal_rate"] == 0.0
    assert all(math.isnan(v) for v in m.abstention([], []).values())


def test_mean_and_percentile_skip_undefined_values():
    assert m.mean([1.0, float("nan"), 0.0]) == 0.5
    assert math.isnan(m.mean([float("nan")]))
    assert math.isnan(m.mean([]))
    values = [10.0, 20.0, 30.0, 40.0]
    assert m.percentile(values, 50) == 25.0  # between 20 and 30
    assert m.percentile(values, 95) == pytest.approx(38.5)  # position 2.85: 30 + 0.85 * 10
    assert m.percentile([7.0], 95) == 7.0
    assert math.isnan(m.percentile([], 50))


def test_costs():
    # 360 compute seconds for 100 queries = 3.6 s each; 1,000 queries = 1 hour at 2.50/hour
    assert m.cost_per_1000_queries(360.0, 100, 2.50) == pytest.approx(2.50)
    assert math.isnan(m.cost_per_1000_queries(1.0, 0, 2.50))
    # 1,000 queries x (1,500 in at 3.00/M + 200 out at 15.00/M) = 4.50 + 3.00
    assert m.api_cost_per_1000_queries(1500, 200, 3.00, 15.00) == pytest.approx(7.50)
