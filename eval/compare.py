"""`rag eval compare RUN_A RUN_B`: per-metric deltas from A (the baseline) to B, and the regressions among them.

A score (0..1) regresses when it moves the wrong way by more than ``threshold`` (absolute). Latency, cost and
tokens/s regress when they move the wrong way by more than ``speed_threshold`` (a fraction of A's value), since
they have units and scale. A metric missing or undefined on either side is shown, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.schema import METRICS, EvalReport, Metric


@dataclass(frozen=True)
class Delta:
    metric: Metric
    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def worse_by(self) -> float | None:
        """How far B is worse than A: absolute for scores, relative for measured quantities; None if undefined."""
        if self.change is None:
            return None
        worse = -self.change if self.metric.better == "higher" else self.change
        if self.metric.unit:
            return worse / abs(self.a) if self.a else None
        return worse

    def regressed(self, threshold: float, speed_threshold: float) -> bool:
        worse = self.worse_by()
        limit = speed_threshold if self.metric.unit else threshold
        return worse is not None and worse > limit + 1e-12


@dataclass(frozen=True)
class Comparison:
    deltas: list[Delta]
    regressions: list[Delta]
    differences: dict[str, tuple[str, str]]  # what differs between the runs' provenance: name -> (A, B)
    threshold: float
    speed_threshold: float


def compare(a: EvalReport, b: EvalReport, threshold: float = 0.02, speed_threshold: float = 0.2) -> Comparison:
    deltas = [
        Delta(metric, a.summary.get(metric.key), b.summary.get(metric.key))
        for metric in METRICS
        if metric.key in a.summary or metric.key in b.summary
    ]
    regressions = [d for d in deltas if d.regressed(threshold, speed_threshold)]
    return Comparison(deltas, regressions, provenance_differences(a, b), threshold, speed_threshold)


def provenance_differences(a: EvalReport, b: EvalReport) -> dict[str, tuple[str, str]]:
    pa, pb = a.provenance, b.provenance
    pairs = {
        "model": (
            f"{pa.model_id} sha256 {(pa.model_sha256 or '?')[:12]}",
            f"{pb.model_id} sha256 {(pb.model_sha256 or '?')[:12]}",
        ),
        "embedder": (pa.embedder_fingerprint, pb.embedder_fingerprint),
        "index": (str(pa.index.get("registry_sha256", "?"))[:12], str(pb.index.get("registry_sha256", "?"))[:12]),
        "dataset": (str(pa.dataset.get("sha256", "?"))[:12], str(pb.dataset.get("sha256", "?"))[:12]),
        "settings": ("", ""),
    }
    changed = sorted(_flat(pa.settings).items() ^ _flat(pb.settings).items())
    keys = sorted({k for k, _ in changed})
    if keys:
        flat_a, flat_b = _flat(pa.settings), _flat(pb.settings)
        pairs["settings"] = (
            ", ".join(f"{k}={flat_a.get(k)}" for k in keys),
            ", ".join(f"{k}={flat_b.get(k)}" for k in keys),
        )
    return {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = str(value)
    return out
