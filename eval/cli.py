"""`rag eval` and `rag eval compare`, and the whole `rag` command (the console script's entry point).

serving/ does not import eval/: ``serving.cli`` holds the engine's and the server's commands, and this module, above
both, adds `rag eval` to them and runs them with the settings tree that has eval's section (``FullSettings``), so a
profile's ``eval:`` section is validated at start-up whatever the subcommand. Run it as `rag` or
``python -m eval.cli``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eval.dataset import BUNDLED_EVAL_SET
from eval.settings import FullSettings, eval_settings, load_settings
from rag.errors import InvalidRequestError
from serving import cli
from serving.cli import app, settings_of
from serving.cli_output import console, progress_bar

REPO = Path(__file__).resolve().parents[1]

eval_app = typer.Typer(help="Score answer quality, speed and cost on a dataset; compare two runs.")
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True)
def eval_run(
    ctx: typer.Context,
    dataset: Annotated[
        Path, typer.Option(help="JSONL eval set (default: the bundled set over the sample corpus).")
    ] = BUNDLED_EVAL_SET,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: eval-runs/<run id>).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings profile to evaluate.")] = None,
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL of an LLM judge (off by default).")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name for the judge.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions (a quick look).", min=1)] = None,
) -> None:
    """Run the real pipeline over a dataset and write report.json, report.md and report.html."""
    if ctx.invoked_subcommand:
        return
    from eval.dataset import load_dataset
    from eval.judge import Judge
    from eval.report import write_reports
    from eval.runner import run_eval
    from rag.container import Container

    settings = settings_of(ctx)
    if config is not None:
        settings = load_settings(config, data_dir=settings.data_dir)
    section = eval_settings(settings)
    items = load_dataset(dataset)[:limit]
    judge = Judge.from_settings(
        judge_url or section.judge_url, judge_model or section.judge_model, section.judge_api_key_env
    )
    container = Container.from_settings(settings)
    if not container.store.docstore.documents("indexed"):
        raise InvalidRequestError(
            f"the store at {settings.data_dir} holds no documents: ingest the corpus the dataset asks about first "
            f"(for the bundled set: rag ingest {REPO / 'ingest' / 'sample_corpus'})"
        )
    with console.status("Loading the models…"):
        container.load()
    with progress_bar("Evaluating", "questions · {task.fields[last]}") as progress:
        task = progress.add_task("eval", total=len(items), last="")
        report = run_eval(
            container,
            items,
            dataset_path=dataset,
            config=str(config or ctx.parent.params.get("config") or os.environ.get("RAG_CONFIG") or "defaults"),
            judge=judge,
            progress=lambda r: progress.update(task, advance=1, last=f"{r.id}: {r.verdict}"),
        )
    paths = write_reports(report, out or Path("eval-runs") / report.run_id)
    print_eval_summary(report)
    console.print(f"Reports: {paths['md']}, {paths['html']}, {paths['json']}", soft_wrap=True)


def print_eval_summary(report) -> None:  # noqa: ANN001 - EvalReport
    from eval.report import format_value
    from eval.schema import METRICS

    table = Table(title=f"rag eval {report.run_id} ({report.counts['questions']} questions)", show_edge=False)
    for column in ("group", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for metric in METRICS:
        if metric.key in report.summary:
            table.add_row(metric.group, metric.label, format_value(metric.key, report.summary[metric.key]))
    console.print(table)
    verdicts = ", ".join(
        f"{n} {k.replace('_', ' ')}"
        for k, n in report.counts.items()
        if n and k not in ("questions", "answerable", "unanswerable")
    )
    console.print(f"Verdicts: {verdicts}", soft_wrap=True)
    cost = report.cost
    if cost.cost_per_1k is not None:
        api = "; ".join(f"{name} {format_value('cost_per_1k', v)}" for name, v in cost.api_cost_per_1k.items())
        console.print(
            f"Cost per 1,000 queries: {format_value('cost_per_1k', cost.cost_per_1k)} on {cost.hardware} at "
            f"{cost.price_per_hour} {cost.currency}/h ({cost.compute_seconds:.1f} s for {cost.queries} queries). "
            f"Per-token APIs at the same token counts: {api}",
            soft_wrap=True,
        )


@eval_app.command("compare")
def eval_compare(
    ctx: typer.Context,
    run_a: Annotated[Path, typer.Argument(help="The baseline run (its folder or report.json).")],
    run_b: Annotated[Path, typer.Argument(help="The candidate run.")],
    threshold: Annotated[
        float | None, typer.Option(help="A 0..1 score that drops by more than this is a regression.")
    ] = None,
    speed_threshold: Annotated[
        float | None, typer.Option(help="Latency/cost/tokens-per-s worse by more than this fraction: a regression.")
    ] = None,
) -> None:
    """Per-metric deltas from A to B. Exit status 1 when B regressed, so a model or config swap can be gated."""
    from eval.compare import compare
    from eval.report import format_value, load_report

    settings = eval_settings(settings_of(ctx))
    a, b = load_report(run_a), load_report(run_b)
    result = compare(
        a,
        b,
        settings.regression_threshold if threshold is None else threshold,
        settings.speed_regression if speed_threshold is None else speed_threshold,
    )
    table = Table(title=f"{a.run_id} -> {b.run_id}", show_edge=False)
    for column in ("metric", "A", "B", "change", ""):
        table.add_column(column, justify="left" if column in ("metric", "") else "right")
    for d in result.deltas:
        change = d.change
        shown = "n/a" if change is None else f"{change:+.4f}" if d.metric.unit == "$" else f"{change:+,.1f}"
        if change is not None and not d.metric.unit:
            shown = f"{change:+.3f}"
        flag = "[red]REGRESSION[/red]" if d in result.regressions else ""
        table.add_row(d.metric.label, format_value(d.metric.key, d.a), format_value(d.metric.key, d.b), shown, flag)
    Console().print(table)
    for name, (was, now) in result.differences.items():
        console.print(f"{name} differs: A {was} | B {now}", soft_wrap=True)
    if result.regressions:
        names = ", ".join(d.metric.label for d in result.regressions)
        console.print(
            f"[red]{len(result.regressions)} regression(s)[/red]: {names} (thresholds: scores "
            f"{result.threshold}, speed and cost {result.speed_threshold:.0%})",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print("No regression beyond the thresholds.")


def main() -> None:
    """The `rag` command: serving's commands and `rag eval`, with the whole settings tree."""
    cli.main(FullSettings)


if __name__ == "__main__":
    main()
