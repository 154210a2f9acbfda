"""The SQLite speaker registry: names, enrolment, model fingerprints, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from voxid.errors import RegistryError
from voxid.registry import Registry, mean_embedding, normalize_rows, validate_name

DIM = 16


def _vectors(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_add_get_and_centroid(tmp_path):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    vecs = _vectors(0)
    rec = reg.add("alice", vecs, metadata={"team": "blue"})
    assert rec.n_utterances == 3
    np.testing.assert_allclose(rec.centroid, mean_embedding(vecs), atol=1e-6)
    assert abs(np.linalg.norm(rec.centroid) - 1) < 1e-5
    got = reg.get("alice")
    np.testing.assert_allclose(got.centroid, rec.centroid)
    assert got.metadata == {"team": "blue"}
    np.testing.assert_allclose(reg.embeddings("alice"), normalize_rows(vecs), atol=1e-6)
    assert "alice" in reg and "bob" not in reg and len(reg) == 1


def test_repeated_enrolment_adds_or_replaces(tmp_path):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    first = reg.add("alice", _vectors(0, 2))
    more = reg.add("alice", _vectors(1, 3), metadata={"k": 1})
    assert more.n_utterances == 5 and more.created == first.created
    assert more.updated >= first.updated
    np.testing.assert_allclose(
        more.centroid, mean_embedding(np.vstack([_vectors(0, 2), _vectors(1, 3)])), atol=1e-6
    )
    fresh = reg.add("alice", _vectors(2, 1), replace=True)
    assert fresh.n_utterances == 1
    assert reg.embeddings("alice").shape == (1, DIM)


def test_persists_across_connections(tmp_path):
    path = tmp_path / "sub" / "speakers.db"
    Registry(path, "fp-a").add("bob", _vectors(3))
    reg = Registry(path, "fp-a")
    names, cents = reg.centroids()
    assert names == ["bob"] and cents.shape == (1, DIM)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.mark.parametrize(
    "bad", ["", "   ", "../x", "a/b", "a\\b", "x" * 65, "unknown", "Unknown", "a;drop", "\x00a"]
)
def test_bad_names_are_refused(tmp_path, bad):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    with pytest.raises(RegistryError, match="speaker name"):
        reg.add(bad, _vectors(0))


def test_good_names():
    assert validate_name("José María") == "José María"
    assert validate_name("o'brien-2") == "o'brien-2"


def test_unknown_name(tmp_path):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    for call in (reg.get, reg.remove, reg.embeddings):
        with pytest.raises(RegistryError, match="'nobody': not enrolled"):
            call("nobody")


def test_remove(tmp_path):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    reg.add("alice", _vectors(0))
    reg.add("bob", _vectors(1))
    reg.remove("alice")
    assert reg.names() == ["bob"]
    con = sqlite3.connect(tmp_path / "speakers.db")
    # The embeddings of a removed speaker go with it (foreign key cascade).
    assert con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 3


def test_other_model_is_refused(tmp_path):
    path = tmp_path / "speakers.db"
    Registry(path, "fp-a").add("alice", _vectors(0))
    with pytest.raises(RegistryError, match=r"model fp-a.*this model is fp-b"):
        Registry(path, "fp-b")
    reg = Registry(path, "fp-a")
    with pytest.raises(RegistryError, match=r"model fp-b refused.*fp-a"):
        reg.add("bob", _vectors(1), model_fingerprint="fp-b")
    with pytest.raises(RegistryError, match="embedding size"):
        reg.add("alice", np.ones((1, DIM + 1)))
    # Opened without a model: listing and removing work, adding does not.
    anon = Registry(path, None)
    assert anon.names() == ["alice"]
    with pytest.raises(RegistryError, match="without a model"):
        anon.add("carol", _vectors(2))


def test_bad_embeddings_and_files(tmp_path):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    with pytest.raises(RegistryError, match="NaN"):
        reg.add("alice", np.full((1, DIM), np.nan))
    with pytest.raises(RegistryError, match="zero"):
        reg.add("alice", np.zeros((1, DIM)))
    assert reg.names() == []  # nothing half-written
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(RegistryError, match=r"junk.db: not a voxid registry"):
        Registry(junk, "fp-a")
    with pytest.raises(RegistryError, match="is a folder"):
        Registry(tmp_path, "fp-a")


def test_must_exist_never_creates(tmp_path):
    """`create=False` (read-only commands) refuses a missing file and creates nothing."""
    missing = tmp_path / "typo" / "speakers.db"
    with pytest.raises(RegistryError, match=r"typo/speakers\.db: no such registry$"):
        Registry(missing, "fp-a", create=False)
    assert not (tmp_path / "typo").exists()
    Registry(tmp_path / "s.db", "fp-a").add("alice", _vectors(0))
    existing = Registry(tmp_path / "s.db", "fp-a", create=False)
    assert existing.names() == ["alice"]
    existing.remove("alice")  # must exist, not read-only: removing still works
    assert existing.names() == []


def _tables(path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master"))
    finally:
        con.close()


@pytest.mark.parametrize("fingerprint", ["fp-a", None])
def test_foreign_sqlite_files_are_not_registries(tmp_path, fingerprint):
    """Another program's database, even one with a `speakers` table, is refused in one
    line and left as it was."""
    foreign = tmp_path / "crm.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE speakers (id INTEGER PRIMARY KEY, who TEXT)")
    con.execute("INSERT INTO speakers (who) VALUES ('alice')")
    con.commit()
    con.close()
    other = tmp_path / "app.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.commit()
    con.close()
    for path in (foreign, other):
        before = path.read_bytes()
        for create in (True, False):
            with pytest.raises(RegistryError, match=rf"{path.name}: not a voxid registry") as e:
                Registry(path, fingerprint, create=create).names()
            assert str(e.value).startswith(f"{path}: not a voxid registry")
            assert "\n" not in str(e.value)
        assert path.read_bytes() == before
    assert _tables(foreign) == ["speakers"]
    # An empty SQLite file (0 bytes) is still a registry to be: enrolment sets it up.
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(RegistryError, match=r"empty\.db: not a voxid registry"):
        Registry(empty, fingerprint, create=False)
    assert Registry(empty, "fp-a").add("alice", _vectors(0)).n_utterances == 3


def _worker(path: str, worker: int, n_speakers: int, out: mp.Queue) -> None:
    reg = Registry(path, "fp-a", timeout=60)
    seen = 0
    for i in range(n_speakers):
        name = f"w{worker}-s{i}"
        reg.add(name, _vectors(worker * 100 + i, 2))
        reg.add(name, _vectors(worker * 100 + i + 50, 1))
        names, cents = reg.centroids()
        # Each snapshot is whole: as many centroids as names, all unit length.
        assert len(names) == len(cents)
        assert np.allclose(np.linalg.norm(cents, axis=1), 1, atol=1e-5)
        seen = max(seen, len(names))
    out.put((worker, seen))


def test_concurrent_enrolment_loses_nothing(tmp_path):
    path = str(tmp_path / "speakers.db")
    Registry(path, "fp-a")
    n_workers, n_speakers = 4, 6
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, w, n_speakers, out)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n_workers
    reg = Registry(path, "fp-a")
    assert len(reg) == n_workers * n_speakers
    for w in range(n_workers):
        for i in range(n_speakers):
            rec = reg.get(f"w{w}-s{i}")
            assert rec.n_utterances == 3
            expected = mean_embedding(
                np.vstack([_vectors(w * 100 + i, 2), _vectors(w * 100 + i + 50, 1)])
            )
            np.testing.assert_allclose(rec.centroid, expected, atol=1e-6)
