"""The speaker registry, SQLite and PostgreSQL: names, enrolment, model fingerprints,
bulk enrolment, change tracking, concurrency. Tests taking `target` run against both (a
real PostgreSQL server the tests start, tests/pg_fixture.py)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from voxid.errors import ModelMismatch, NoSuchRegistry, RegistryError, UnknownSpeaker
from voxid.inference.registry import (
    _SCHEMA_V1,
    Enrolment,
    Registry,
    mean_embedding,
    normalize_rows,
    open_registry,
    validate_name,
)

DIM = 16


def _vectors(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a registry lives: a SQLite file, or a fresh schema on the test PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "speakers.db"
    return request.getfixturevalue("pg_url")


def test_add_get_and_centroid(target):
    reg = open_registry(target, "fp-a")
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


def test_repeated_enrolment_adds_or_replaces(target):
    reg = open_registry(target, "fp-a")
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


def test_persists_across_connections(target):
    open_registry(target, "fp-a").add("bob", _vectors(3))
    reg = open_registry(target, "fp-a")
    names, cents = reg.centroids()
    assert names == ["bob"] and cents.shape == (1, DIM)


def test_sqlite_file_is_wal(tmp_path):
    path = tmp_path / "sub" / "speakers.db"
    Registry(path, "fp-a").add("bob", _vectors(3))
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.mark.parametrize(
    "bad", ["", "   ", "../x", "a/b", "a\\b", "x" * 65, "unknown", "Unknown", "a;drop", "\x00a"]
)
def test_bad_names_are_refused(tmp_path, bad):
    reg = Registry(tmp_path / "speakers.db", "fp-a")
    with pytest.raises(RegistryError, match="speaker name"):
        reg.add(bad, _vectors(0))
    with pytest.raises(RegistryError, match="speaker name"):
        reg.add_many([Enrolment("ok", _vectors(1)), Enrolment(bad, _vectors(0))])
    assert reg.names() == []  # the bulk batch is all or nothing


def test_good_names():
    assert validate_name("José María") == "José María"
    assert validate_name("o'brien-2") == "o'brien-2"


def test_unknown_name(target):
    reg = open_registry(target, "fp-a")
    for call in (reg.get, reg.remove, reg.embeddings):
        with pytest.raises(UnknownSpeaker, match="'nobody': not enrolled"):
            call("nobody")


def test_remove(target):
    reg = open_registry(target, "fp-a")
    reg.add("alice", _vectors(0))
    reg.add("bob", _vectors(1))
    reg.remove("alice")
    assert reg.names() == ["bob"]
    # The embeddings of a removed speaker go with it (foreign key cascade).
    assert reg.add("alice", _vectors(2, 1)).n_utterances == 1


def test_other_model_is_refused(target):
    open_registry(target, "fp-a").add("alice", _vectors(0))
    with pytest.raises(ModelMismatch, match=r"1 speaker\(s\) .*model fp-a.*this model is fp-b"):
        open_registry(target, "fp-b")
    reg = open_registry(target, "fp-a")
    with pytest.raises(ModelMismatch, match=r"model fp-b refused.*fp-a"):
        reg.add("bob", _vectors(1), model_fingerprint="fp-b")
    with pytest.raises(ModelMismatch, match="embedding size"):
        reg.add("alice", np.ones((1, DIM + 1)))
    # Opened without a model: listing and removing work, adding does not.
    anon = open_registry(target, None)
    assert anon.names() == ["alice"]
    with pytest.raises(RegistryError, match="without a model"):
        anon.add("carol", _vectors(2))
    with pytest.raises(ModelMismatch, match=r"model fp-b refused.*1 speaker\(s\) of model fp-a"):
        anon.add_many([Enrolment("carol", _vectors(2))], model_fingerprint="fp-b")
    # Once nobody is left, the registry takes any model again, as a new one does.
    anon.remove("alice")
    assert open_registry(target, "fp-b").add("bob", _vectors(1)).model_fingerprint == "fp-b"


def test_other_chunk_policy_is_refused(target):
    """The same weights under another chunk policy (a card re-shipped with another
    short-speech rule) embed differently: their speakers are not mixed either."""
    a = '{"min_input_seconds":null,"seconds":1.0}'
    b = '{"min_input_seconds":2.0,"seconds":1.0}'
    old = open_registry(target, "fp-a")  # a caller that records no policy
    old.add("alice", _vectors(0))
    # A registry written before policies were recorded adopts its next writer's.
    open_registry(target, "fp-a", chunk_policy=a).add("bob", _vectors(1))
    with pytest.raises(
        ModelMismatch,
        match=r"2 speaker\(s\) .*another chunk policy \(min_input_seconds null -> 2.0\)",
    ):
        open_registry(target, "fp-a", chunk_policy=b)
    old.remove("alice")
    old.remove("bob")
    # Nobody left: any policy again; a writer opened before the others came is refused
    # when it writes.
    first, second = (open_registry(target, "fp-a", chunk_policy=p) for p in (b, a))
    first.add("carol", _vectors(2))
    with pytest.raises(ModelMismatch, match=r"min_input_seconds 2.0 -> null"):
        second.add("dave", _vectors(3))
    with pytest.raises(ModelMismatch, match=r"another chunk policy"):
        second.add_many([Enrolment("dave", _vectors(3))])
    assert open_registry(target, "fp-a", chunk_policy=b).names() == ["carol"]


def test_bad_embeddings(target):
    reg = open_registry(target, "fp-a")
    with pytest.raises(RegistryError, match="NaN"):
        reg.add("alice", np.full((1, DIM), np.nan))
    with pytest.raises(RegistryError, match="zero"):
        reg.add("alice", np.zeros((1, DIM)))
    with pytest.raises(RegistryError, match="zero"):
        reg.add_many([Enrolment("bob", _vectors(0)), Enrolment("carol", np.zeros((1, DIM)))])
    assert reg.names() == []  # nothing half-written


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(RegistryError, match=r"junk.db: not a voxid registry"):
        Registry(junk, "fp-a")
    with pytest.raises(RegistryError, match="is a folder"):
        Registry(tmp_path, "fp-a")


def test_must_exist_never_creates(tmp_path):
    """`create=False` (read-only commands) refuses a missing file and creates nothing."""
    missing = tmp_path / "typo" / "speakers.db"
    with pytest.raises(NoSuchRegistry, match=r"typo/speakers\.db: no such registry$"):
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


def test_version_1_file_is_upgraded(tmp_path):
    """A registry written by the previous voxid opens as it was and gains the change log;
    its model becomes the stored fingerprint."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(_SCHEMA_V1)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    cent = mean_embedding(_vectors(0))
    con.execute(
        "INSERT INTO speakers (name, model_fingerprint, dim, centroid, n_utterances, created, "
        "updated) VALUES ('alice', 'fp-a', ?, ?, 1, 0, 0)",
        (DIM, cent.tobytes()),
    )
    con.execute(
        "INSERT INTO embeddings (speaker_id, vector, created) VALUES (1, ?, 0)", (cent.tobytes(),)
    )
    con.commit()
    con.close()
    with pytest.raises(ModelMismatch, match="enrolled with model fp-a, this model is fp-b"):
        Registry(path, "fp-b")
    reg = Registry(path, "fp-a")
    np.testing.assert_allclose(reg.get("alice").centroid, cent)
    assert reg.changes().names == ["alice"]
    assert reg.add("alice", _vectors(1, 1)).n_utterances == 2


def test_bulk_enrolment_and_sources(target):
    reg = open_registry(target, "fp-a")
    reg.add("old", _vectors(0, 1), sources=["/data/old.wav"])
    batch = [
        Enrolment(f"s{i}", _vectors(10 + i, 2), sources=[f"/d/s{i}a.wav", f"/d/s{i}b.wav"])
        for i in range(50)
    ]
    batch.append(Enrolment("old", _vectors(1, 1), sources=["/data/old2.wav"]))
    batch.append(Enrolment("s0", _vectors(99, 1), metadata={"x": 1}))  # same name twice
    assert reg.add_many(batch) == 51
    assert len(reg) == 51
    assert reg.get("old").n_utterances == 2
    s0 = reg.get("s0")
    assert s0.n_utterances == 3 and s0.metadata == {"x": 1}
    np.testing.assert_allclose(
        s0.centroid, mean_embedding(np.vstack([_vectors(10, 2), _vectors(99, 1)])), atol=1e-6
    )
    asked = ["/d/s3a.wav", "/d/nope.wav", "/data/old2.wav"]
    assert reg.enrolled_sources(asked) == {"/d/s3a.wav", "/data/old2.wav"}
    assert reg.add_many([]) == 0


def test_changes_follow_writes_from_other_connections(target):
    """The change counter moves with every write, from any connection, and `changes`
    returns just what was written and removed since."""
    mine, other = open_registry(target, "fp-a"), open_registry(target, "fp-a")
    mine.add("alice", _vectors(0))
    start = mine.generation()
    full = mine.changes()
    assert full.full and full.names == ["alice"] and full.centroids.shape == (1, DIM)
    assert mine.generation() == start  # nothing new: the same token
    other.add("bob", _vectors(1))
    other.remove("alice")
    now = mine.generation()
    assert now[0] == start[0] and now[1] == start[1] + 2
    delta = mine.changes(start)
    assert not delta.full and delta.names == ["bob"] and delta.removed == ["alice"]
    np.testing.assert_allclose(delta.centroids[0], mean_embedding(_vectors(1)), atol=1e-6)
    assert mine.changes(now).names == [] and mine.changes(now).removed == []
    mine.add("alice", _vectors(2))  # back again: no longer among the removed
    assert mine.changes(now).names == ["alice"] and mine.changes(now).removed == []
    assert mine.changes(("another instance", now[1])).full


def test_sqlite_unchanged_generation_reads_no_table(tmp_path):
    """With nothing written since, `generation` runs only `PRAGMA data_version`."""
    reg = Registry(tmp_path / "s.db", "fp-a")
    reg.add("alice", _vectors(0))
    first = reg.generation()
    statements: list[str] = []
    reg._connect().set_trace_callback(statements.append)
    for _ in range(3):
        assert reg.generation() == first
    assert statements == ["PRAGMA data_version"] * 3
    Registry(tmp_path / "s.db", "fp-a").add("bob", _vectors(1))  # another connection
    assert reg.generation()[1] == first[1] + 1


def _worker(target, worker: int, n_speakers: int, out: mp.Queue) -> None:
    reg = open_registry(target, "fp-a", timeout=60)
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


def test_concurrent_enrolment_loses_nothing(target):
    target = str(target)
    open_registry(target, "fp-a")
    n_workers, n_speakers = 4, 6
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(target, w, n_speakers, out)) for w in range(n_workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n_workers
    reg = open_registry(target, "fp-a")
    assert len(reg) == n_workers * n_speakers
    changes = reg.changes()
    assert sorted(changes.names) == sorted(
        f"w{w}-s{i}" for w in range(n_workers) for i in range(n_speakers)
    )
    for w in range(n_workers):
        for i in range(n_speakers):
            rec = reg.get(f"w{w}-s{i}")
            assert rec.n_utterances == 3
            expected = mean_embedding(
                np.vstack([_vectors(w * 100 + i, 2), _vectors(w * 100 + i + 50, 1)])
            )
            np.testing.assert_allclose(rec.centroid, expected, atol=1e-6)
