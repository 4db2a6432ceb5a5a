"""The vector store: a Chroma collection on local disk (vectors and metadata) plus the chunk texts in the
document store (rag.docstore), written in batches, read by cosine similarity."""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.docstore import DocStore, DocumentRecord
from rag.errors import ConfigError, StoreError
from rag.index_keeper import IndexKeeper
from rag.locking import hold_store, release_store
from rag.schemas import ChunkRecord, RetrievedChunk, SearchFilters
from rag.vector_index import ExactIndex

if TYPE_CHECKING:
    from rag.embedding import Embedder
    from rag.seams import SearchIndex

# Chroma refuses an add of more records than its max batch size (about 5,461 here), after the embedding
# work is done; stay well below it.
WRITE_BATCH = 1000

# Chroma keeps every write in its log (``embeddings_queue`` in chroma.sqlite3: ids, metadata, vectors) until
# each of the collection's segments has persisted past it, and only then purges it (``automatically_purge``).
# The vector segment persists every ``sync_threshold`` records, so a deleted document's records stay in that log
# until up to 1000 more writes. Persisting after every write (a threshold of 1) would purge them at once, but a
# kill -9 during one of those persists left the segment's index_metadata.pickle truncated and the store unopenable
# (the kill test, 1 run in 4): crash safety wins, and Chroma's default is kept, set explicitly so that a store
# an earlier version switched to 1 is switched back.
LOG_SYNC_THRESHOLD = 1000
# A delete of this id (never a chunk id) is written after deletions: the purge keeps the log's last record, and
# without it that would be the delete, which names the deleted chunk ids (and so the document id).
LOG_MARKER = "~log-marker"


class ChromaStore:
    """Chunks with their embeddings, in a Chroma collection using cosine distance: embedded (a directory this
    process holds alone) or on a Chroma server (``server=(host, port)``), which several processes may share.

    The search index is saved under ``<data dir>/index/<collection>`` and kept in step with every process's writes
    through a version counter in the registry (``vectors_version``) and its change log (``rag.index_keeper``): a
    process that finds the version moved on applies the logged changes before searching. Access decisions never
    depend on that index: they come from the registry, which every process reads fresh. ``new_index`` makes an
    empty search index (``rag.seams.SearchIndex``; exact by default)."""

    def __init__(
        self,
        path: Path,
        collection: str,
        docstore: DocStore | None = None,
        server: tuple[str, int] | None = None,
        new_index: Callable[[], SearchIndex] = ExactIndex,
    ) -> None:
        self.path = Path(path)
        self.collection_name = collection
        self.server = server
        self.docstore = docstore or DocStore(self.path.parent / f"docstore-{collection}.sqlite3")
        self._collection = None
        self._client = None
        self._holding = False
        self.docstore.shared = server is not None
        self.keeper = IndexKeeper(
            self.path.parent / "index" / collection,
            new_index,
            self.docstore,
            self._records,
            self.count,
            check_count=server is None,  # with a server, another process may be between its write and its bump
        )
        self._deleted = 0  # chunks deleted since the keyword index was last purged

    def hold(self) -> None:
        """Take the one-process hold on an embedded store now (first use takes it otherwise); StoreBusyError names
        the process that has it. Nothing to hold with a Chroma server."""
        if self.server is None and not self._holding:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)  # vectors and metadata: owner-only
            hold_store(self.path)
            self._holding = True

    @property
    def collection(self):  # noqa: ANN201 - chromadb type is imported lazily
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            quiet = ChromaSettings(anonymized_telemetry=False)
            self.hold()
            where = f"the Chroma server at {self.server[0]}:{self.server[1]}" if self.server else f"{self.path}"
            try:
                if self.server is None:
                    self._client = chromadb.PersistentClient(path=str(self.path), settings=quiet)
                else:
                    self._client = chromadb.HttpClient(host=self.server[0], port=self.server[1], settings=quiet)
                self._collection = self._open_collection()
            except Exception as exc:  # chromadb raises many types; callers get one with a fix
                self.close()
                hint = " (is `chroma run` up? see chroma.host/port)" if self.server else ""
                raise StoreError(f"cannot open the Chroma store at {where}{hint}: {exc}") from exc
        return self._collection

    def _open_collection(self):  # noqa: ANN202 - chromadb type is imported lazily
        """The collection, with its vector segment persisting every ``LOG_SYNC_THRESHOLD`` writes. A collection
        made by an earlier version with another threshold is changed; Chroma applies that when it next opens the
        segment, so the embedded client is reopened here (a Chroma server applies it when it restarts)."""
        collection = self._client.get_or_create_collection(
            self.collection_name, configuration={"hnsw": {"space": "cosine", "sync_threshold": LOG_SYNC_THRESHOLD}}
        )
        if (collection.configuration or {}).get("hnsw", {}).get("sync_threshold") == LOG_SYNC_THRESHOLD:
            return collection
        collection.modify(configuration={"hnsw": {"sync_threshold": LOG_SYNC_THRESHOLD}})
        if self.server is not None:
            return collection
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self._client.close()
        self._client = chromadb.PersistentClient(
            path=str(self.path), settings=ChromaSettings(anonymized_telemetry=False)
        )
        return self._client.get_collection(self.collection_name)

    @property
    def index(self) -> SearchIndex:
        """The search index (``rag.seams.SearchIndex``): its saved copy or Chroma's records on first use, then
        caught up with other processes' writes from the registry's change log."""
        return self.keeper.get()

    def _records(self, ids: Sequence[str] | None) -> Iterator[tuple[list[str], list[str], Any]]:
        """(ids, doc ids, vectors) of every record (``ids`` None) or of the given ids, in batches."""
        if ids is None:
            batches = ({"limit": WRITE_BATCH, "offset": offset} for offset in range(0, self.count(), WRITE_BATCH))
        else:
            batches = ({"ids": list(ids[start : start + WRITE_BATCH])} for start in range(0, len(ids), WRITE_BATCH))
        for batch in batches:
            got = self.collection.get(include=["embeddings", "metadatas"], **batch)
            if got["ids"]:
                yield got["ids"], [str((m or {}).get("doc_id", "")) for m in got["metadatas"]], got["embeddings"]

    def save_index(self) -> None:
        """Save the search index now, if it is loaded (it is otherwise saved every few writes and at close)."""
        self.keeper.save(force=True)

    def close(self) -> None:
        """Let go of the Chroma directory and the text store, so that another process may open them (closing
        the last connection also folds the text store's write-ahead log into its file). Reopens on next use."""
        self.keeper.close()
        client, self._client, self._collection = self._client, None, None
        try:
            if client is not None:
                client.close()
        finally:
            if self._holding:
                self._holding = False
                release_store(self.path)
            self.docstore.close()

    def check_embedder(self, embedder: Embedder, *, claim: bool = False) -> None:
        """Vectors of two embedders never meet in one collection: queries and new chunks must be embedded by the
        embedder that wrote the store. ``claim`` (ingest): a store with no documents yet records ``embedder``."""
        mine = str(embedder.fingerprint)
        recorded = self.docstore.get_meta("embedder")
        if recorded is None:
            if claim and (self.count() == 0 or not self.docstore.documents()):
                self.docstore.set_meta("embedder", mine)
            return
        if recorded != mine:
            raise ConfigError(
                f"the store at {self.path.parent} was embedded with {recorded}, but the configured embedder is "
                f"{mine}: set embedding.backend/model back, or ingest into a new data dir"
            )

    def count(self) -> int:
        return self.collection.count()

    def upsert(self, records: Sequence[ChunkRecord], embeddings: Sequence[Sequence[float]]) -> None:
        """Texts first, then vectors: a chunk Chroma can find always has its text."""
        self.docstore.put_chunks([(r.id, str(r.metadata["doc_id"]), r.text, r.embed_text) for r in records])
        with self.keeper.writing():
            for start in range(0, len(records), WRITE_BATCH):
                batch = records[start : start + WRITE_BATCH]
                self.collection.upsert(
                    ids=[r.id for r in batch],
                    metadatas=[r.metadata for r in batch],
                    embeddings=[list(e) for e in embeddings[start : start + WRITE_BATCH]],
                )
            if (index := self.keeper.index) is not None:
                index.add([r.id for r in records], [str(r.metadata["doc_id"]) for r in records], embeddings)
            block = np.asarray(embeddings, dtype=np.float32)
            payloads = [(str(r.metadata["doc_id"]), row.tobytes()) for r, row in zip(records, block, strict=True)]
            self._wrote_vectors(added=[r.id for r in records], payloads=payloads)

    def _wrote_vectors(
        self, added: Sequence[str] = (), removed: Sequence[str] = (), payloads: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Count this write in the shared version and its change log, with the added vectors (other processes
        catch up from it)."""
        previous, now = self.docstore.bump_vectors_version(added, removed, payloads)
        self.keeper.wrote(previous, now)

    def update_metadata(self, records: Sequence[ChunkRecord]) -> None:
        for start in range(0, len(records), WRITE_BATCH):
            batch = records[start : start + WRITE_BATCH]
            self.collection.update(ids=[r.id for r in batch], metadatas=[r.metadata for r in batch])

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        found: set[str] = set()
        for start in range(0, len(wanted), WRITE_BATCH):
            found.update(self.collection.get(ids=wanted[start : start + WRITE_BATCH], include=[])["ids"])
        return found

    def document_chunks(self, document_id: str) -> dict[str, dict[str, Any]]:
        """Chunk id -> metadata for every stored chunk of one document."""
        result = self.collection.get(where={"doc_id": document_id}, include=["metadatas"])
        return dict(zip(result["ids"], result["metadatas"], strict=True))

    def document_chunk_ids(self, document_id: str) -> set[str]:
        """Every chunk id of a document, in Chroma or in the text store (a crash can leave either)."""
        return set(self.document_chunks(document_id)) | self.docstore.chunk_ids(document_id)

    def all_ids(self) -> set[str]:
        found: set[str] = set()
        total = self.count()
        for offset in range(0, total, WRITE_BATCH):
            found.update(self.collection.get(include=[], limit=WRITE_BATCH, offset=offset)["ids"])
        return found

    def missing_from_index(self) -> set[str]:
        """Ids whose records Chroma holds but its vector index cannot return. After a kill -9 the embedded
        store was seen to lose a vector this way (count 177, a query over all returned 176). O(n): used only
        after an unclean stop."""
        total = self.count()
        if total == 0:
            return set()
        probe = self.collection.get(limit=1, include=["embeddings"])["embeddings"][0]
        indexed = set(self.collection.query(query_embeddings=[list(probe)], n_results=total, include=[])["ids"][0])
        return self.all_ids() - indexed

    def reindex(self, ids: Sequence[str]) -> None:
        """Write these chunks' vectors again from Chroma's own records (delete, then add)."""
        ids = list(ids)
        for start in range(0, len(ids), WRITE_BATCH):  # the same vectors again: the search index is unchanged
            batch = self.collection.get(ids=ids[start : start + WRITE_BATCH], include=["embeddings", "metadatas"])
            self.collection.delete(ids=batch["ids"])
            self.collection.add(
                ids=batch["ids"], embeddings=[list(e) for e in batch["embeddings"]], metadatas=batch["metadatas"]
            )

    def delete(self, ids: Sequence[str]) -> None:
        """Vectors first, then texts: no vector is ever left pointing at a missing text. Each vector is first
        overwritten with a blank one: Chroma's vector segment only marks a deleted vector, and its file would
        keep the values (``purge_deleted`` then clears the log and the freed pages)."""
        ids = list(ids)
        with self.keeper.writing():
            if (index := self.keeper.index) is not None:
                index.remove(ids)  # first: a query never returns a chunk that is on its way out
            for start in range(0, len(ids), WRITE_BATCH):
                batch = ids[start : start + WRITE_BATCH]
                present = self.collection.get(ids=batch, include=["embeddings"])
                if present["ids"]:
                    blank = [1.0] + [0.0] * (len(present["embeddings"][0]) - 1)  # a unit vector: cosine needs a norm
                    self.collection.update(ids=present["ids"], embeddings=[blank] * len(present["ids"]))
                self.collection.delete(ids=batch)
            self.docstore.delete_chunks(ids)
            self._deleted += len(ids)
            self._wrote_vectors(removed=ids)

    def purge_deleted(self) -> None:
        """After deletions, leave no deleted chunk's words, metadata or vector on disk: rewrite the keyword index
        and truncate the text store's write-ahead log; move Chroma's log past the deletions, so that its purge
        drops every record of them, and (embedded) VACUUM chroma.sqlite3, which leaves the deleted rows' bytes in
        free pages otherwise. A Chroma server's file is the server's: `chroma vacuum` there, with it stopped."""
        if self.server is None:
            self._scrub_unused_capacity()  # every run: a resize during this run's adds wrote new spare room
        if not self._deleted:
            return
        self.keeper.forget_deleted()  # before the text store's log is truncated: it held the change log's rows
        self.docstore.purge_deleted_words()
        self.collection.delete(ids=[LOG_MARKER])
        if self.server is None:
            self._vacuum_chroma()
        self._deleted = 0

    def _scrub_unused_capacity(self) -> None:
        """Zero the spare room of Chroma's HNSW files. Chroma writes an index file at its full capacity when it
        creates or grows it, and the slots past the last element hold whatever the process's memory held there:
        seen here, other chunks' metadata (titles, paths, ACL tokens) and SQLite pages, a deleted document's among
        them. Later writes touch only the elements they change, so the spare room stays zero once zeroed. The
        header (hnswlib's: a version, then offset, capacity, element count and element size) says where it
        starts; a file whose header does not read that way is left alone."""
        for header in self.path.glob("*/header.bin"):
            try:
                raw = header.read_bytes()
                _, _, capacity, count, size = struct.unpack_from("<iQQQQ", raw)
                for name, width in (("data_level0.bin", size), ("length.bin", 4)):
                    target = header.with_name(name)
                    if not (0 <= count <= capacity and 0 < width and target.stat().st_size == capacity * width):
                        continue
                    with open(target, "r+b") as f:
                        f.seek(count * width)
                        if f.read().strip(b"\0"):
                            f.seek(count * width)
                            f.write(bytes((capacity - count) * width))
            except (OSError, struct.error):
                continue  # not an hnswlib segment of the expected shape: nothing to scrub

    def _vacuum_chroma(self) -> None:
        """SQLite's VACUUM on Chroma's file, as `chroma vacuum` does, while the client stays open: VACUUM takes
        the file's write lock and Chroma's connections wait for it (a search meanwhile is slower, not wrong)."""
        with self.keeper.lock:  # no search index reload reads Chroma while the file is rewritten
            conn = sqlite3.connect(self.path / "chroma.sqlite3", timeout=30, isolation_level=None)
            try:
                for attempt in range(50):
                    try:
                        conn.execute("VACUUM")
                        return
                    except sqlite3.OperationalError as exc:  # a Chroma reader holds the file: retry shortly
                        if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 49:
                            raise StoreError(f"cannot compact the Chroma store at {self.path}: {exc}") from exc
                        time.sleep(0.1)
            finally:
                conn.close()

    def query(
        self, embedding: Sequence[float], top_k: int, allowed_docs: Sequence[str] | None = None
    ) -> list[RetrievedChunk]:
        """The nearest chunks by cosine similarity, among ``allowed_docs`` when given (the filter is applied
        inside the search, before the top-k)."""
        return self.chunks(self.dense_search(embedding, top_k, allowed_docs))

    def chunks(self, scored: Sequence[tuple[str, float]]) -> list[RetrievedChunk]:
        """Chunks with their metadata and text, for (id, score) pairs, in the given order."""
        if not scored:
            return []
        ids = [cid for cid, _ in scored]
        got = self.collection.get(ids=ids, include=["metadatas"])
        metadata = dict(zip(got["ids"], got["metadatas"], strict=True))
        texts = self.docstore.texts(ids)
        return [
            RetrievedChunk(id=cid, text=texts[cid], score=round(score, 6), metadata=dict(metadata[cid] or {}))
            for cid, score in scored
            if cid in texts and cid in metadata
        ]

    # -- the Store seam (rag.seams): what retrieval and the document preview ask of the store ------------------

    @property
    def access_generation(self) -> tuple[int, int]:
        return self.docstore.access_generation

    def allowed_documents(self, tokens: Iterable[str], filters: SearchFilters | None = None) -> list[str]:
        return self.docstore.allowed_documents(tokens, filters)

    def dense_search(
        self, vector: Sequence[float], top_k: int, allowed_docs: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        return self.index.search(vector, top_k, allowed_docs)

    def keyword_search(
        self,
        query: str,
        top_k: int,
        tokens: Iterable[str],
        filters: SearchFilters | None = None,
        common_share: float = 0.02,
    ) -> list[tuple[str, float]]:
        return self.docstore.keyword_search(query, top_k, tokens, filters, common_share)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.index.vectors(ids)

    def texts_mentioning(
        self, phrase: str, tokens: Iterable[str], filters: SearchFilters | None = None, limit: int = 50
    ) -> list[str]:
        return self.docstore.texts_mentioning(phrase, tokens, filters, limit)

    def document(self, doc_id: str) -> DocumentRecord | None:
        return self.docstore.document(doc_id)

    def document_acl(self, doc_id: str) -> set[str]:
        return self.docstore.acl([doc_id]).get(doc_id, set())

    def document_texts(self, doc_id: str) -> list[str]:
        chunks = self.document_chunks(doc_id)
        order = sorted(chunks, key=lambda cid: int(chunks[cid].get("chunk_index", 0) or 0))
        texts = self.docstore.texts(order)
        return [texts[cid] for cid in order if cid in texts]

    def load_index(self) -> int:
        """Load the search index now rather than on the first question (seconds at 100k chunks): its size."""
        return len(self.index)
