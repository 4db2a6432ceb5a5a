"""Write an ``EvalReport`` as report.json, report.md and a self-contained report.html, and read report.json back.

The HTML is one file with inline CSS and inline SVG plots: nothing is fetched when it is opened, because the
product runs with no network. Answers and questions are untrusted text, so the HTML template autoescapes and the
Markdown escapes table cells. Both renderers share ``format_value`` and the row builders below, so the two
reports always show the same figures.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from pydantic import ValidationError

from eval.metrics import percentile
from eval.schema import METRIC_BY_KEY, METRICS, CitedItem, EvalReport, QuestionResult
from rag.errors import InvalidRequestError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TEMPLATES = Path(__file__).parent / "templates"
GROUPS = ("retrieval", "answer", "abstention", "speed", "cost", "judge")
ANSWER_PREVIEW_CHARS = 120
CURRENCY_SYMBOLS = {"USD": "$", "$": "$", "EUR": "€", "€": "€", "GBP": "£", "£": "£"}
_LOAD_HINT = "pass the run directory that `rag eval` wrote (it holds report.json) or the report.json file itself"


# -- formatting -------------------------------------------------------------------------------------------------


def format_money(value: float | None, currency: str = "USD", decimals: int = 4) -> str:
    """Money as "$0.0123"; more decimals for tiny amounts so they do not read as zero; unknown currencies by code."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 10**-decimals:
        decimals = 1 - math.floor(math.log10(abs(value)))  # two significant digits
    amount = f"{abs(value):,.{decimals}f}"
    sign = "-" if value < 0 else ""
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def format_unit(value: float | None, unit: str, *, currency: str = "USD") -> str:
    """A value in one of the ``Metric`` units: "" (a 0..1 score), "ms", "tok/s" or a currency."""
    if value is None:
        return "n/a"
    if unit == "":
        return f"{value:.3f}"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "tok/s":
        return f"{value:,.1f} tok/s"
    return format_money(value, currency)


def format_value(key: str, value: float | None, *, currency: str = "USD") -> str:
    """A summary or per-question figure in its metric's unit; keys outside ``METRICS`` format as 0..1 scores.

    A "$" metric is written in ``currency`` (the report's ``cost.currency``), "$" when that is USD.
    """
    metric = METRIC_BY_KEY.get(key)
    return format_unit(value, metric.unit if metric else "", currency=currency)


def _na(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _na(value)


def _pairs(mapping: dict[str, Any] | None, sep: str) -> str:
    return ", ".join(f"{k}{sep}{v}" for k, v in (mapping or {}).items()) or "n/a"


# -- rows shared by both renderers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    key: str
    label: str
    value: str
    better: str


@dataclass(frozen=True)
class QuestionRow:
    id: str
    question: str
    answer: str
    verdict: str
    verdict_class: str
    error: str | None
    citations: list[str]
    retrieval: str
    latency: str
    scores: list[str]


def summary_groups(report: EvalReport) -> list[tuple[str, list[SummaryRow]]]:
    """The summary figures in ``METRICS`` order, grouped; metrics absent from the summary are left out."""
    currency = report.cost.currency
    groups = []
    for group in GROUPS:
        rows = [
            SummaryRow(m.key, m.label, format_value(m.key, report.summary[m.key], currency=currency), m.better)
            for m in METRICS
            if m.group == group and m.key in report.summary
        ]
        if rows:
            groups.append((group, rows))
    return groups


def count_rows(report: EvalReport) -> list[tuple[str, str]]:
    return [(name.replace("_", " "), _count(n)) for name, n in report.counts.items()]


def cost_rows(report: EvalReport) -> list[tuple[str, str]]:
    cost = report.cost
    return [
        ("hardware", cost.hardware),
        ("price per hour", format_money(cost.price_per_hour, cost.currency, decimals=2)),
        ("compute seconds", f"{cost.compute_seconds:,.1f} s"),
        ("queries", _count(cost.queries)),
        ("cost per 1,000 queries", format_money(cost.cost_per_1k, cost.currency)),
        ("mean prompt tokens", _na(None if cost.mean_prompt_tokens is None else f"{cost.mean_prompt_tokens:,.1f}")),
        (
            "mean completion tokens",
            _na(None if cost.mean_completion_tokens is None else f"{cost.mean_completion_tokens:,.1f}"),
        ),
    ]


def api_cost_rows(report: EvalReport) -> list[tuple[str, str, str]]:
    """(pricing, cost per 1,000 queries, times this run's cost) for this run and each configured API price."""
    cost = report.cost
    this_run = "1.0×" if cost.cost_per_1k else "n/a"
    rows = [(f"this run ({cost.hardware})", format_money(cost.cost_per_1k, cost.currency), this_run)]
    for name, api_cost in sorted(cost.api_cost_per_1k.items()):
        ratio = f"{api_cost / cost.cost_per_1k:,.1f}×" if cost.cost_per_1k else "n/a"
        rows.append((name, format_money(api_cost, cost.currency), ratio))
    return rows


def provenance_rows(report: EvalReport) -> list[tuple[str, str]]:
    p = report.provenance
    index, dataset = p.index, p.dataset
    rows = [
        ("model", f"{p.model_id} ({p.model_source})"),
        ("model sha256", _na(p.model_sha256)),
        ("embedder", p.embedder_id),
        ("embedder fingerprint", p.embedder_fingerprint),
        ("index", f"{_count(index.get('documents'))} documents, {_count(index.get('chunks'))} chunks"),
        ("index registry sha256", _na(index.get("registry_sha256"))),
        ("dataset", _na(dataset.get("path"))),
        ("dataset sha256", _na(dataset.get("sha256"))),
        (
            "dataset questions",
            f"{_count(dataset.get('questions'))} ({_count(dataset.get('answerable'))} answerable, "
            f"{_count(dataset.get('unanswerable'))} unanswerable)",
        ),
        ("versions", _pairs(p.versions, " ")),
        ("machine", _pairs(p.machine, ": ")),
    ]
    if p.judge:
        rows.append(("judge", _pairs(p.judge, ": ")))
    return rows


def score_keys(report: EvalReport) -> list[str]:
    """Every per-question score key, in ``METRICS`` order, then any others alphabetically."""
    present = {key for q in report.questions for key in q.scores}
    known = [m.key for m in METRICS if m.key in present]
    return known + sorted(present - set(known))


def score_label(key: str) -> str:
    metric = METRIC_BY_KEY.get(key)
    return metric.label if metric else key


def citation_label(citation: CitedItem) -> str:
    """A citation as "[1] handbook.md ✓gold": the marker, the file name, and whether it is a gold source."""
    gold = " ✓gold" if citation.gold else ""
    return f"[{citation.index}] {PurePath(citation.source).name}{gold}"


def question_rows(report: EvalReport) -> list[QuestionRow]:
    keys = score_keys(report)
    return [_question_row(q, keys) for q in report.questions]


def _question_row(q: QuestionResult, keys: list[str]) -> QuestionRow:
    return QuestionRow(
        id=q.id,
        question=q.question,
        answer=q.answer,
        verdict=q.verdict,
        verdict_class="verdict-" + q.verdict.replace(" ", "-"),
        error=q.error,
        citations=[citation_label(c) for c in q.citations],
        retrieval=format_unit(q.retrieval_ms, "ms"),
        latency=format_unit(q.latency_ms, "ms"),
        scores=[format_value(key, q.scores.get(key)) for key in keys],
    )


# -- Markdown ---------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\|<>`])")


def md_cell(text: str, limit: int | None = None) -> str:
    """One table cell: on one line, ``|`` and inline HTML escaped, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return _MD_SPECIAL.sub(r"\\\1", flat)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _md_bullets(rows: list[tuple[str, str]]) -> list[str]:
    return [f"- **{label}**: {md_cell(value)}" for label, value in rows] + [""]


def render_markdown(report: EvalReport) -> str:
    lines = [
        f"# Eval run {md_cell(report.run_id)}",
        "",
        f"Config: {md_cell(report.config)} · started {report.started_at} · finished {report.finished_at}",
        "",
        "## Summary",
        "",
    ]
    summary = [
        [group if i == 0 else "", row.label, row.value, row.better]
        for group, rows in summary_groups(report)
        for i, row in enumerate(rows)
    ]
    lines += _md_table(["group", "metric", "value", "better"], summary)
    lines += ["## Counts", ""] + _md_bullets(count_rows(report))
    lines += ["## Cost", ""] + _md_bullets(cost_rows(report))
    api = [[md_cell(name), value, ratio] for name, value, ratio in api_cost_rows(report)]
    lines += _md_table(["pricing", "cost per 1,000 queries", "vs this run"], api)
    lines += ["## Provenance", ""] + _md_bullets(provenance_rows(report))
    lines += ["## Questions", ""]
    questions = [
        [
            md_cell(q.id),
            q.verdict,
            md_cell(q.answer, ANSWER_PREVIEW_CHARS),
            md_cell(", ".join(q.citations)),
            q.latency,
        ]
        for q in question_rows(report)
    ]
    lines += _md_table(["id", "verdict", "answer", "cited sources", "latency"], questions)
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------------------------

_SVG_START = re.compile(r"<svg\b")
_SVG_ID_REF = re.compile(r'(\bid="|href="#|url\(#)')


def _svg(fig: Figure, name: str) -> Markup:
    """The figure as an inline ``<svg>``: no XML declaration or DOCTYPE, ids prefixed so plots do not clash."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Creator": None, "Date": None})
    text = buffer.getvalue()
    start = _SVG_START.search(text)
    if start is None:
        raise RuntimeError("matplotlib wrote no <svg> element")
    svg = _SVG_ID_REF.sub(lambda m: f"{m.group(1)}{name}-", text[start.start() :])
    return Markup(svg)  # matplotlib's own output: the SVG backend XML-escapes any text in it


def _plot(name: str, width: float, height: float, draw: Callable[[Axes], None]) -> Markup:
    fig = Figure(figsize=(width, height), layout="constrained")
    draw(fig.add_subplot())
    return _svg(fig, name)


def _stated_or_measured(report: EvalReport, key: str, values: list[float], q: float) -> float:
    """The summary's figure, so the plot agrees with the table; measured from ``values`` when it has none."""
    stated = report.summary.get(key)
    return percentile(values, q) if stated is None else stated


def latency_histogram_svg(report: EvalReport) -> Markup | None:
    """Histogram of per-question total latency with p50 and p95 marked; None when no latency was measured."""
    latencies = [q.latency_ms for q in report.questions if q.latency_ms is not None]
    if not latencies:
        return None
    marks = {q: _stated_or_measured(report, f"latency_ms_p{q}", latencies, q) for q in (50, 95)}

    def draw(ax: Axes) -> None:
        ax.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="#4c78a8", edgecolor="white")
        for q, style in ((50, "--"), (95, ":")):
            ax.axvline(marks[q], color="#e45756", linestyle=style, label=f"p{q} {format_unit(marks[q], 'ms')}")
        ax.set_xlabel("total latency (ms)")
        ax.set_ylabel("questions")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)

    return _plot("latency", 7, 3.2, draw)


def score_bars_svg(report: EvalReport) -> Markup | None:
    """Horizontal bars of the 0..1 summary scores that are defined; None when there is none."""
    scores = [(m, report.summary[m.key]) for m in METRICS if m.unit == "" and report.summary.get(m.key) is not None]
    if not scores:
        return None
    colours = dict(zip(GROUPS, ("#4c78a8", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1"), strict=True))
    lower_better = any(m.better == "lower" for m, _ in scores)

    def draw(ax: Axes) -> None:
        labels = [m.label + (" ↓" if m.better == "lower" else "") for m, _ in scores]
        bars = ax.barh(labels, [v for _, v in scores], color=[colours[m.group] for m, _ in scores])
        ax.bar_label(bars, labels=[f"{v:.3f}" for _, v in scores], padding=3, fontsize=8)
        ax.set_xlim(0, 1.12)
        ax.invert_yaxis()
        ax.set_xlabel("score (0..1)" + ("; ↓ lower is better" if lower_better else ""))
        groups = dict.fromkeys(m.group for m, _ in scores)
        handles = [Patch(color=colours[g], label=g) for g in groups]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)

    return _plot("scores", 7, 0.32 * len(scores) + 1.0, draw)


def cost_bars_svg(report: EvalReport) -> Markup | None:
    """Cost per 1,000 queries: this run against each configured API price; None when there is no figure."""
    cost = report.cost
    entries = [(f"this run ({cost.hardware})", cost.cost_per_1k)] if cost.cost_per_1k is not None else []
    entries += sorted(cost.api_cost_per_1k.items())
    if not entries:
        return None

    def draw(ax: Axes) -> None:
        colours = ["#59a14f" if name.startswith("this run") else "#bab0ac" for name, _ in entries]
        bars = ax.barh([name for name, _ in entries], [v for _, v in entries], color=colours)
        ax.bar_label(bars, labels=[format_money(v, cost.currency) for _, v in entries], padding=3, fontsize=8)
        ax.margins(x=0.25)
        ax.invert_yaxis()
        ax.set_xlabel(f"cost per 1,000 queries ({cost.currency})")

    return _plot("cost", 7, 0.35 * len(entries) + 1.0, draw)


# -- HTML -------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _html_environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )


def render_html(report: EvalReport) -> str:
    template = _html_environment().get_template("report.html.j2")
    return template.render(
        report=report,
        summary=summary_groups(report),
        counts=count_rows(report),
        cost=cost_rows(report),
        api_costs=api_cost_rows(report),
        provenance=provenance_rows(report),
        score_columns=[score_label(key) for key in score_keys(report)],
        questions=question_rows(report),
        plots={
            "latency": latency_histogram_svg(report),
            "scores": score_bars_svg(report),
            "cost": cost_bars_svg(report),
        },
    )


# -- files ------------------------------------------------------------------------------------------------------


def write_reports(report: EvalReport, out: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "md": out / REPORT_MD, "html": out / REPORT_HTML}
    paths["json"].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths


def load_report(path: Path | str) -> EvalReport:
    """Read a report.json, given the file or the run directory that holds it."""
    path = Path(path)
    file = path / REPORT_JSON if path.is_dir() else path
    if not file.is_file():
        raise InvalidRequestError(f"No eval report at {file}: {_LOAD_HINT}.", detail={"path": str(file)})
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"{file} is not JSON ({exc}): {_LOAD_HINT}.", detail={"path": str(file)}) from exc
    found = data.get("format") if isinstance(data, dict) else None
    if found != "rag-eval/1":
        raise InvalidRequestError(
            f"{file} is not a rag-eval/1 report (format: {found!r}): {_LOAD_HINT}.", detail={"path": str(file)}
        )
    try:
        return EvalReport.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidRequestError(
            f"{file} is a rag-eval/1 report with invalid fields ({problems}): {_LOAD_HINT}.",
            detail={"path": str(file)},
        ) from exc
