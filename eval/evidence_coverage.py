"""In what share of questions does the model's input hold the reference answer? One line per way of choosing it.

``python -m eval.evidence_coverage --dataset FILE [--data-dir DIR] [--config profile.yaml]``: the store must
already hold the dataset's corpus. For each answerable question with a reference, the question is retrieved and
packed as ``rag ask`` does, and each option below builds the text the model would read; a question counts when
the normalised reference (or its regex) is in that text. Token counts are the embedder's tokens (about the LLM's).

Options: ``sentences`` (the old default: the 3 sentences most similar to the question), ``chunks:N`` (the first N
packed passages whole), ``windows:M/n`` (the M best windows, each with n following units; ``rag.evidence``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from eval.dataset import load_dataset
from eval.runner import holds_reference
from rag.container import Container
from rag.evidence import select
from rag.packing import pack
from rag.prompting import select_context
from rag.settings import load_settings


def options(container: Container) -> dict[str, Callable]:
    settings = container.settings
    embedder = container.embedder
    found: dict[str, Callable] = {
        "sentences (3, old default)": lambda q, ps: " ".join(
            select_context(
                q, ps, embedder, settings.prompt.model_copy(update={"context": "sentences", "max_sentences": 3})
            ).sentences
        )
    }
    for n in (1, 2, 4):
        found[f"chunks:{n}"] = lambda q, ps, n=n: "\n".join(p.text for p in ps[:n])
    for windows, neighbours in ((2, 1), (4, 0), (4, 1), (6, 1), (8, 1)):

        def view(q, ps, windows=windows, neighbours=neighbours):  # noqa: ANN001, ANN202
            evidence = select(
                q,
                ps,
                embedder,
                max_windows=windows,
                lexical_weight=settings.prompt.lexical_weight,
                neighbours=neighbours,
            )
            return "\n".join(evidence.text_of(p) for p in evidence.chosen)

        found[f"windows:{windows}/{neighbours}"] = view
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--show-misses", default=None, help="print the questions this option misses")
    args = parser.parse_args(argv)
    settings = load_settings(args.config, data_dir=args.data_dir)
    container = Container.from_settings(settings)
    container.load(llm=False)
    items = [i for i in load_dataset(args.dataset) if i.answerable and (i.reference_text or i.reference_regex)]
    views = options(container)
    hits = dict.fromkeys(views, 0)
    tokens = dict.fromkeys(views, 0)
    misses: dict[str, list[str]] = {name: [] for name in views}
    for item in items:
        chunks = container.retriever.retrieve(item.question)
        relevant = [c for c in chunks if c.score >= settings.retrieval.min_score]
        if settings.prompt.pack_context:
            relevant = pack(relevant, settings.prompt.duplicate_threshold, merge=settings.prompt.context != "windows")
        for name, view in views.items():
            text = view(item.question, relevant) if relevant else ""
            tokens[name] += len(container.embedder.tokenize(text)) if text else 0
            if holds_reference(item, text) == 1.0:
                hits[name] += 1
            else:
                misses[name].append(item.id)
    print(f"{args.dataset.name}: {len(items)} answerable questions with a reference")
    print(f"{'option':<28} {'holds the reference':>20} {'mean tokens':>12}")
    for name in views:
        print(f"{name:<28} {hits[name] / len(items):>14.3f} ({hits[name]:>3}) {tokens[name] / len(items):>12.0f}")
    if args.show_misses:
        print(f"missed by {args.show_misses}: {' '.join(misses[args.show_misses])}")
    container.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
