"""Approximate, filtered nearest-neighbour search for large stores: faiss IVF-Flat with the access filter inside
the search (issue 16, item 2).

Why this design, measured in eval/results/scale (1M chunks, 384 dimensions): IVF-Flat with an ``IDSelectorBitmap``
of the permitted rows and nprobe 256 kept recall@10 >= 0.97 at every selectivity; when few rows are permitted,
an exact scan of those rows alone (gathered in blocks) is faster and exact, so it takes over at ``exact_below``
permitted rows. Below ``min_rows`` chunks the whole exact index is fast enough, and no IVF is trained.

The exact side (``ExactIndex``, which this extends) keeps every row, vector, id and document: it answers
``vectors``, the exact scans, and the bookkeeping. faiss holds the same rows under labels of its own: a row that is
removed or replaced leaves its label behind as stale, and the bitmap leaves stale labels out. A loaded copy is
memory-mapped (``IO_FLAG_MMAP_IFC``) so workers share its pages; faiss cannot add to a mapped index (it aborts),
so rows added after a load stay "pending" on the exact side, scanned exactly beside each IVF search, until the
next save copies the index into memory and adds them.

Upkeep: stale labels cost probe time and memory, and lists trained on a fraction of today's rows grow unbalanced,
so a save rebuilds the IVF from the live rows when stale labels exceed ``RETRAIN_STALE`` of its entries or the live
rows have grown ``RETRAIN_GROWTH`` times since training (or drops it, at ``min_rows`` live rows or fewer);
otherwise it only adds the pending rows.

Codec: ``flat`` keeps full vectors in the lists (4 bytes a dimension); ``sq8`` one byte a dimension (faiss
``IndexIVFScalarQuantizer``, 8-bit), a quarter of the memory. Either way the IVF only proposes candidates: they are
scored again exactly from the exact side's vectors, so the scores returned are exact cosines.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.index_files import index_file_error, load_index, save_index
from rag.vector_index import ExactIndex

MIN_ROWS = 200_000  # below this many chunks, the exact index serves every search
EXACT_BELOW = 20_000  # at most this many permitted rows: an exact scan of those rows
NPROBE = 256
BLOCK = 4096  # rows gathered at a time by the exact scan of permitted rows
FILTERS_KEPT = 32  # callers' filters kept (see IvfIndex._filter)
RETRAIN_STALE = 0.2  # a save retrains when more than this share of the IVF's entries are stale
RETRAIN_GROWTH = 4  # ... or when the live rows are this many times those it was trained on
CODECS = ("flat", "sq8")


def _faiss():  # noqa: ANN202 - imported when first needed: faiss loads native libraries
    import faiss

    return faiss


class IvfIndex(ExactIndex):
    """Exact below ``min_rows`` chunks or ``exact_below`` permitted rows, IVF-Flat with a row bitmap above."""

    kind = "ivf"

    def __init__(
        self,
        dim: int | None = None,
        *,
        min_rows: int = MIN_ROWS,
        exact_below: int = EXACT_BELOW,
        nprobe: int = NPROBE,
        block: int = BLOCK,
        codec: str = "flat",
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r} is not one of {', '.join(CODECS)}")
        super().__init__(dim)
        self.min_rows, self.exact_below, self.nprobe, self.block = min_rows, exact_below, nprobe, block
        self.codec = codec
        self._trained_on = 0  # live rows when the IVF was trained
        self._ann = None  # the trained faiss index, once there is one
        self._mapped = False  # the ann is a memory-mapped saved copy: read-only
        self._label_row = np.zeros(0, dtype=np.int64)  # faiss label -> row; -1: stale (removed or replaced)
        self._row_label = np.zeros(0, dtype=np.int64)  # row -> faiss label; -1: not in the ann (pending)
        self._journal: set[int] | None = None  # while a new IVF is trained: the rows written meanwhile
        self._state = 0  # bumped by every change of rows or labels: cached filters of an older state are rebuilt
        self._filters: OrderedDict[int, tuple] = OrderedDict()  # see _filter

    @property
    def trained(self) -> bool:
        return self._ann is not None

    @property
    def nlist(self) -> int:
        """The IVF's clusters (0 before it is trained)."""
        return int(self._ann.nlist) if self._ann is not None else 0

    def _row_labels(self) -> np.ndarray:
        if self._row_label.size < self._size:
            extra = max(self._size - self._row_label.size, self._row_label.size)
            self._row_label = np.concatenate([self._row_label, np.full(extra, -1, dtype=np.int64)])
        return self._row_label

    def _dropped(self, rows: list[int]) -> None:
        self._state += 1
        if self._journal is not None:
            self._journal.update(rows)
        if self._ann is not None:
            self._forget(np.asarray(rows, dtype=np.int64))

    def _forget(self, rows: np.ndarray) -> None:
        """These rows' faiss entries no longer hold their current vector (or any chunk)."""
        row_label = self._row_labels()
        labels = row_label[rows]
        self._label_row[labels[labels >= 0]] = -1
        row_label[rows] = -1

    def _index_rows(self, rows: np.ndarray) -> None:
        """Add these rows' current vectors to the (unmapped) ann under fresh labels."""
        if rows.size == 0:
            return
        self._state += 1
        labels = np.arange(self._label_row.size, self._label_row.size + rows.size, dtype=np.int64)
        self._ann.add_with_ids(self._gather(rows), labels)  # type: ignore[union-attr]
        self._label_row = np.concatenate([self._label_row, rows.astype(np.int64)])
        self._row_labels()[rows] = labels

    def _live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._doc_of[: self._size] >= 0)

    def _train(self) -> None:
        """Train a new IVF on a sample of the live rows (nlist about 4 * sqrt(rows), a power of two, at least 39
        training rows a list as faiss asks) and add every live row; stale labels are gone.

        This takes minutes at a million rows, so it runs outside the lock: searches (on the old IVF, or exact) and
        writes go on. The rows written meanwhile are journalled and, once the new IVF is swapped in, marked stale
        there and added again with their current vectors."""
        faiss = _faiss()
        with self._lock:
            if self._journal is not None:
                return  # another thread is training
            self._journal = set()
            live = self._live_rows()
            nlist = 1 << round(math.log2(4 * math.sqrt(live.size)))
            while nlist > 1 and nlist * 39 > live.size:
                nlist //= 2
            sample = np.random.default_rng(0).choice(live, min(live.size, 64 * nlist), replace=False)
            training = self._gather(np.sort(sample))
        try:
            quantizer = faiss.IndexFlatIP(self._dim)
            if self.codec == "sq8":
                ann = faiss.IndexIVFScalarQuantizer(
                    quantizer, self._dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            else:
                ann = faiss.IndexIVFFlat(quantizer, self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ann.cp.max_points_per_centroid = 64
            ann.train(training)
            for start in range(0, live.size, 65536):
                with self._lock:  # a copy of these rows' vectors: a write cannot tear one while faiss reads it
                    part = self._gather(live[start : start + 65536])
                ann.add_with_ids(part, np.arange(start, start + part.shape[0], dtype=np.int64))
        except BaseException:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            touched = np.fromiter(self._journal, dtype=np.int64, count=len(self._journal))
            self._journal = None
            label_row = live.copy()
            label_row[np.isin(live, touched)] = -1  # written since they were read: stale in the new IVF
            self._ann, self._mapped, self._trained_on = ann, False, int(live.size)
            self._state += 1
            self._label_row = label_row
            self._row_label = np.full(self._size, -1, dtype=np.int64)
            held = np.flatnonzero(label_row >= 0)
            self._row_label[label_row[held]] = held
            again = touched[touched < self._size]
            self._index_rows(np.unique(again[self._doc_of[again] >= 0]))

    def retrain(self) -> None:
        """Train the IVF again now, on every live row (a save does this when it has gone stale)."""
        self._train()

    def _untrain(self) -> None:
        """Back to the exact index alone: too few rows left for an IVF to pay (trained again past ``min_rows``)."""
        self._ann, self._mapped, self._trained_on = None, False, 0
        self._state += 1
        self._label_row = np.zeros(0, dtype=np.int64)
        self._row_label = np.zeros(0, dtype=np.int64)

    def add(self, ids: Sequence[str], doc_ids: Sequence[str], vectors: Sequence[Sequence[float]]) -> None:
        with self._lock:
            super().add(ids, doc_ids, vectors)  # replaced rows' labels forgotten (_dropped)
            if not ids:
                return
            self._state += 1
            rows = np.unique(self._rows_of(ids))
            if self._journal is not None:
                self._journal.update(rows.tolist())
            train = self._ann is None and self._journal is None and len(self) > self.min_rows
            if self._ann is not None and not self._mapped:
                self._index_rows(rows)
        if train:
            self._train()  # outside the lock

    def search(
        self, query: Sequence[float], top_k: int, allowed_docs: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        with self._lock:
            if self._ann is None:
                return super().search(query, top_k, allowed_docs)
            if not self._count or top_k <= 0:
                return []
            q = np.asarray(query, dtype=np.float32)
            norm = float(np.linalg.norm(q))
            q = q / norm if norm else q
            permitted, bits, pending = self._filter(allowed_docs)
            if permitted.size <= self.exact_below:
                return self._scan(q, permitted, top_k)
            hits = self._scan(q, self._ann_candidates(q, bits, pending, top_k), top_k)
            if len(hits) < min(top_k, permitted.size):  # the probed lists held too few permitted rows
                return self._scan(q, permitted, top_k)
            return hits

    def _filter(self, allowed_docs: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The caller's permitted rows, the bitmap of their IVF labels (None when the exact scan will serve) and the
        permitted rows the IVF does not hold yet. Building them is linear in the rows (about 10 ms a million), so
        they are kept per allowed-list object until the index changes: the retriever hands the same cached list to
        every search of a caller until access changes. The list must not be changed in place after a search."""
        key = id(allowed_docs)
        size = None if allowed_docs is None else len(allowed_docs)
        hit = self._filters.get(key)
        if hit is not None and hit[0] is allowed_docs and hit[1:3] == (size, self._state):
            self._filters.move_to_end(key)
            return hit[3]
        keep = self._permitted(allowed_docs)
        permitted = np.flatnonzero(keep)
        bits, pending = None, permitted[:0]
        if permitted.size > self.exact_below:
            labels = self._label_row
            allowed = labels >= 0
            allowed[allowed] = keep[labels[allowed]]
            bits = np.packbits(allowed, bitorder="little")
            pending = np.flatnonzero(keep & (self._row_labels()[: self._size] < 0))
        value = (permitted, bits, pending)
        self._filters[key] = (allowed_docs, size, self._state, value)
        while len(self._filters) > FILTERS_KEPT:
            self._filters.popitem(last=False)
        return value

    def _ann_candidates(self, q: np.ndarray, bits: np.ndarray, pending: np.ndarray, top_k: int) -> np.ndarray:
        """Rows of the ann's top-k among the permitted ones (``bits``: their labels), with ``pending``: the
        permitted rows it does not hold yet."""
        faiss = _faiss()
        labels = self._label_row
        params = faiss.SearchParametersIVF(
            sel=faiss.IDSelectorBitmap(labels.size, faiss.swig_ptr(bits)), nprobe=min(self.nprobe, self._ann.nlist)
        )
        _, found = self._ann.search(q[None, :], top_k, params=params)
        rows = labels[found[0][found[0] >= 0]]
        return np.unique(np.concatenate([rows, pending]))

    def _scan(self, q: np.ndarray, rows: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        """Exact top-k over these rows only (ascending), gathered ``block`` rows at a time."""
        scores = np.empty(rows.size, dtype=np.float32)
        for start in range(0, rows.size, self.block):
            part = rows[start : start + self.block]
            scores[start : start + part.size] = self._gather(part) @ q
        return self._top(rows, scores, top_k)

    def needs_retraining(self) -> bool:
        """Whether the IVF has gone stale enough to be rebuilt from the live rows (see the module's upkeep)."""
        with self._lock:
            if self._ann is None:
                return False
            stale = int(np.count_nonzero(self._label_row < 0))
            return stale > RETRAIN_STALE * self._label_row.size or len(self) >= RETRAIN_GROWTH * self._trained_on

    def save(self, path: Path, version: int = 0) -> None:
        """The exact side's files, and once trained the faiss index with its label -> row map (rows as saved),
        retrained first when it has gone stale, else with the pending rows added."""
        faiss = _faiss()
        if self.needs_retraining() and len(self) > self.min_rows:
            self._train()  # outside the lock
        with self._lock:
            if self.needs_retraining() and len(self) <= self.min_rows:
                self._untrain()
            rows, arrays, lists, info = self.snapshot()
            blobs = {}
            if self._ann is not None:
                pending = rows[self._row_labels()[rows] < 0]
                if pending.size and self._mapped:  # a mapped index takes no adds (nor does its clone_index)
                    self._ann, self._mapped = faiss.deserialize_index(faiss.serialize_index(self._ann)), False
                    self._index_rows(pending)
                saved_row = np.full(self._size, -1, dtype=np.int64)
                saved_row[rows] = np.arange(rows.size)
                label_row = np.where(self._label_row >= 0, saved_row[np.maximum(self._label_row, 0)], -1)
                arrays = arrays | {"label_row": label_row}
                blobs["ann"] = faiss.serialize_index(self._ann)
                info = info | {"nlist": int(self._ann.nlist), "codec": self.codec, "trained_on": self._trained_on}
        save_index(path, self.kind, version, arrays, lists, info, blobs)

    def load(self, path: Path, version: int | None = None) -> int:
        """Load the saved copy, its faiss index memory-mapped (shared by every process that loads it)."""
        saved = load_index(path, self.kind, version)
        label_row, blob = saved.arrays.pop("label_row", None), saved.blobs.get("ann")
        ann = None
        if (label_row is None) != (blob is None):
            raise index_file_error(path, "has a faiss index without its label map, or the other way round")
        if blob is not None:
            faiss = _faiss()
            try:
                ann = faiss.read_index(str(blob), faiss.IO_FLAG_MMAP_IFC)
            except RuntimeError as exc:
                raise index_file_error(path, f"has an unreadable faiss index ({exc})") from exc
            count, codec = saved.info.get("count"), saved.info.get("codec")
            if codec != self.codec:
                raise index_file_error(path, f"holds a {codec!r} faiss index, not {self.codec!r} as configured")
            whole = (
                isinstance(ann, faiss.IndexIVF) and ann.d == saved.info.get("dim") and isinstance(count, int)
                and isinstance(saved.info.get("trained_on"), int)
                and label_row.dtype == np.int64 and label_row.shape == (ann.ntotal,)  # type: ignore[union-attr]
                and (label_row.size == 0 or -1 <= int(label_row.min()) <= int(label_row.max()) < count)  # type: ignore[union-attr]
            )  # fmt: skip
            if not whole:
                raise index_file_error(path, "has a faiss index that does not match its rows")
        with self._lock:  # the rows and the ann replaced together, under one hold of the lock
            self.restore(saved, path)
            self._ann, self._mapped = ann, ann is not None
            self._state += 1
            self._label_row = np.array(label_row) if label_row is not None else np.zeros(0, dtype=np.int64)
            self._trained_on = saved.info.get("trained_on", 0)
            self._row_label = np.full(self._size, -1, dtype=np.int64)
            held = np.flatnonzero(self._label_row >= 0)
            self._row_label[self._label_row[held]] = held
        return saved.version
