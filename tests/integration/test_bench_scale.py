"""The small-scale run of `make bench-scale` (issue 16): 20,000 synthetic chunks through the product's own write
path, the approximate index trained (its thresholds lowered to this size), real Chroma on disk and as a server,
the real embedder. It asserts recall against the exact scan, that nothing forbidden comes back and that another
worker sees a write; never speed (the full run prints the figures)."""

from __future__ import annotations

import json

import pytest

from eval import bench_store_scale

pytestmark = pytest.mark.integration


def test_small_scale_benchmark_keeps_recall_and_access_and_applies_deltas(tmp_path):
    out = tmp_path / "scale.json"
    bench_store_scale.main(
        ["--n", "20000", "--queries", "20", "--ivf-min-rows", "5000", "--ivf-exact-below", "300", "--workers",
         "--data", str(tmp_path / "data"), "--vectors", str(tmp_path / "vectors"), "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    queries = report["queries"]
    assert queries["ann_trained"] and queries["opened_from"] == "disk" and queries["chunks"] == 20000
    for group, figures in queries["groups"].items():
        assert figures["forbidden"] == 0, group
        assert figures["recall_dense"] >= 0.97 and figures["recall_e2e"] >= 0.97, (group, figures)
    assert queries["groups"]["s1000"]["documents"] < queries["groups"]["s2"]["documents"] < 1000
    workers = report["workers"]
    assert workers["delta"]["deltas"] >= 1  # found through the change log, not a reload
    assert workers["worker1"]["load_s"] > 0 and workers["worker2"]["after"]["rss_mb"] > 0
