"""Peak memory while ingesting one large PDF (default 1,000 pages), against the same pipeline on 10 pages.

Run: ``python -m eval.bench_big_pdf [--pages 1000] [--backend onnx-int8]``. The PDF is generated with reportlab
(a test dependency) into a temporary folder, with real text on every page. Peak RSS is sampled every 0.1 s
over this process and its parse workers; the ratio against the 10-page run shows whether memory grows with
the document (it should not: pages are parsed one at a time and chunks are embedded and written in batches).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import rag  # noqa: F401  - offline switches first
from eval.memory import RssSampler
from rag.container import build_embedder, build_ingest_service
from rag.settings import load_settings

WORDS = (
    "policy leave travel expense laptop badge office server backup incident audit budget invoice contract "
    "supplier training safety canteen parking payroll pension holiday approval manager report quarter"
).split()


def make_pdf(path: Path, pages: int, seed: int = 7) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    pdf.setTitle(f"Big manual, {pages} pages")
    for page in range(pages):
        pdf.setFont("Helvetica", 10)
        y = A4[1] - 60
        pdf.drawString(60, y, f"Chapter {page + 1}")
        for _ in range(40):
            y -= 17
            pdf.drawString(60, y, " ".join(rng.choice(WORDS) for _ in range(13)))
        pdf.showPage()
    pdf.save()
    return path


def ingest_once(pdf: Path, backend: str) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"  # the derived model files come from the machine's cache (cache_dir)
        settings = load_settings(data_dir=data_dir, embedding={"backend": backend})
        embedder = build_embedder(settings)
        embedder.load()
        service = build_ingest_service(settings, embedder=embedder)
        with RssSampler() as sampler:
            started = time.perf_counter()
            report = service.ingest_paths([pdf])
            seconds = time.perf_counter() - started
        assert report.ok, report.summary()
        return sampler.peak_bytes / 1048576, seconds, report.chunks_embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--backend", default="onnx-int8", choices=["onnx-int8", "torch"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        small = make_pdf(tmp_path / "small.pdf", 10)
        started = time.perf_counter()
        big = make_pdf(tmp_path / "big.pdf", args.pages)
        print(
            f"generated {args.pages} pages ({big.stat().st_size / 1048576:.1f} MB) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        small_peak, small_s, small_chunks = ingest_once(small, args.backend)
        big_peak, big_s, big_chunks = ingest_once(big, args.backend)
        print(f"10 pages:   {small_chunks:5d} chunks in {small_s:6.1f}s, peak RSS {small_peak:7.0f} MiB (process tree)")
        print(
            f"{args.pages} pages: {big_chunks:5d} chunks in {big_s:6.1f}s, peak RSS {big_peak:7.0f} MiB (process tree)"
        )
        print(
            f"peak RSS ratio {args.pages} pages / 10 pages: {big_peak / small_peak:.2f}x "
            f"for {big_chunks / max(small_chunks, 1):.0f}x the chunks"
        )


if __name__ == "__main__":
    main()
