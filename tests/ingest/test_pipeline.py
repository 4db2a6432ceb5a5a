"""Incremental ingest over the real chromadb on disk, with the hash embedder."""

from pathlib import Path

from ingest.pipeline import IngestService
from rag.store import ChromaStore
from tests.fakes import HashEmbedder

POLICY = "# Policy\n\n## Leave\n\nStaff get 26 days of annual leave.\n\n## Travel\n\nBook trips in TripDesk.\n"


def service_for(data_dir: Path, settings) -> IngestService:
    return IngestService(HashEmbedder(), ChromaStore(data_dir / "chroma", "test"), settings.chunking)


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
    texts = service.store.collection.get()["documents"]
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
