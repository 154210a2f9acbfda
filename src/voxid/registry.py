"""Enrolled speakers in SQLite: names, per-utterance embeddings, centroids, the model behind them.

One file holds everything (stdlib `sqlite3`, WAL mode so readers never block the writer, a
busy timeout so concurrent writers queue instead of failing). Every write is one
`BEGIN IMMEDIATE` transaction, so several processes can enrol and identify at once and a
reader sees a speaker either whole or not at all.

Schema (version 1):
- `meta(key, value)`: `schema_version`.
- `speakers(id, name UNIQUE, model_fingerprint, dim, centroid BLOB, n_utterances, created,
  updated, metadata JSON)`; the centroid is the renormalised mean of the L2-normalised
  utterance embeddings, kept up to date on every write so identification reads one row each.
- `embeddings(id, speaker_id, vector BLOB, created)`: one float32 row per utterance, kept so
  later enrolments can add utterances and the centroid is recomputed from all of them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import RegistryError

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 64
#: Names identify() answers with when nobody matches; never a speaker's name.
RESERVED_NAMES = frozenset({"unknown"})
_NAME_RE = re.compile(r"^\w[\w .,'()@+-]*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    centroid BLOB NOT NULL,
    n_utterances INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_speaker ON embeddings(speaker_id);
"""
#: The columns every query relies on; a file without them is not a voxid registry.
_REQUIRED_COLUMNS = {
    "meta": {"key", "value"},
    "speakers": {
        "id",
        "name",
        "model_fingerprint",
        "dim",
        "centroid",
        "n_utterances",
        "created",
        "updated",
        "metadata",
    },
    "embeddings": {"id", "speaker_id", "vector", "created"},
}


def validate_name(name: str) -> str:
    """Return `name` stripped if it is a usable speaker name, else raise RegistryError.

    Letters (any script), digits, spaces and ``_ . , ' ( ) @ + -``; at most 64 characters;
    no path separators or ``..`` (names end up in file names and URLs).

    >>> validate_name(" Alice Smith ")
    'Alice Smith'
    >>> validate_name("../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    voxid.errors.RegistryError: speaker name '../etc/passwd': only letters, digits, spaces ...
    """
    if not isinstance(name, str):
        raise RegistryError(f"speaker name {name!r}: must be a string")
    clean = name.strip()
    if not clean:
        raise RegistryError("speaker name: empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise RegistryError(
            f"speaker name {clean[:20]!r}...: longer than {MAX_NAME_LENGTH} characters"
        )
    if not _NAME_RE.match(clean) or ".." in clean:
        raise RegistryError(
            f"speaker name {clean!r}: only letters, digits, spaces and "
            "_ . , ' ( ) @ + - are allowed"
        )
    if clean.lower() in RESERVED_NAMES:
        raise RegistryError(f"speaker name {clean!r}: reserved (identify answers it for no match)")
    return clean


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row (float32); zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    """The renormalised mean of L2-normalised rows: every utterance weighs the same."""
    return normalize_rows(normalize_rows(np.atleast_2d(embeddings)).mean(axis=0))


@dataclass(frozen=True)
class SpeakerRecord:
    """One enrolled speaker: centroid (D,), how many utterances, the model, times, metadata."""

    name: str
    centroid: np.ndarray
    n_utterances: int
    model_fingerprint: str
    created: float
    updated: float
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Enrolled speakers of one model in a SQLite file.

    Arguments:
        path: the database file (created with its folder if missing, unless `create=False`).
        model_fingerprint: the model whose embeddings this registry holds; speakers enrolled
            with another model are refused with a message naming both. `None` opens it for
            listing and removal only.
        timeout: seconds a writer waits for another writer's lock.
        create: False: the file must exist (RegistryError "no such registry" otherwise) and
            nothing is ever created; for commands that only read or remove.

    >>> import tempfile, numpy as np
    >>> reg = Registry(tempfile.mkdtemp() + "/speakers.db", "model-a")
    >>> reg.add("alice", np.eye(3)[:2]).n_utterances
    2
    >>> reg.names()
    ['alice']
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model_fingerprint: str | None,
        *,
        timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.model_fingerprint = model_fingerprint
        self.timeout = timeout
        self.create = create
        self._local = threading.local()
        if self.path.exists() and self.path.is_dir():
            raise RegistryError(f"{self.path}: is a folder, not a registry file")
        if not create and not self.path.exists():
            raise RegistryError(f"{self.path}: no such registry")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()
        self._check_fingerprint()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # One connection per thread and process: sqlite3 connections must not cross threads,
        # and a connection inherited through fork() would share locks with the parent.
        key = os.getpid()
        con = getattr(self._local, "con", None)
        if con is not None and getattr(self._local, "pid", None) == key:
            return con
        # mode=rw: SQLite would otherwise create the file of a must-exist registry that was
        # deleted since (each thread connects on its own).
        target, uri = (self.path, False) if self.create else (self.path.absolute().as_uri(), True)
        if uri:
            target += "?mode=rw"
        try:
            con = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=uri)
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from None
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            # Checked before anything is written, so another program's database is refused
            # as it was, not turned to WAL or given our tables.
            has_schema = self._check_schema(con)
            if not has_schema and not self.create:
                raise RegistryError(f"{self.path}: not a voxid registry (it has no tables)")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            if not has_schema:
                self._init_schema(con)
        except sqlite3.DatabaseError as exc:
            con.close()
            raise self._open_error(exc) from None
        except BaseException:
            con.close()
            raise
        self._local.con, self._local.pid = con, key
        return con

    def _open_error(self, exc: sqlite3.DatabaseError) -> RegistryError:
        if not self.path.exists():
            return RegistryError(f"{self.path}: no such registry")
        if "locked" in str(exc) or "busy" in str(exc):
            return RegistryError(f"{self.path}: cannot open ({exc})")
        return RegistryError(f"{self.path}: not a voxid registry ({exc})")

    def _check_schema(self, con: sqlite3.Connection) -> bool:
        """True for a voxid registry, False for a database without tables (a new file);
        RegistryError for anything else, such as another program's `speakers` table."""
        con.execute("BEGIN")
        try:
            return self._verify_tables(con)
        finally:
            con.execute("COMMIT")

    def _verify_tables(self, con: sqlite3.Connection) -> bool:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return False
        for table, needed in _REQUIRED_COLUMNS.items():
            if table not in tables:
                raise RegistryError(f"{self.path}: not a voxid registry (no {table} table)")
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            missing = sorted(needed - have)
            if missing:
                raise RegistryError(
                    f"{self.path}: not a voxid registry (table {table} has no {missing[0]} column)"
                )
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise RegistryError(f"{self.path}: not a voxid registry (no schema version)") from None
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path}: registry schema {version} is newer than this voxid")
        return True

    def _init_schema(self, con: sqlite3.Connection) -> None:
        # One IMMEDIATE transaction: when several processes create the file at once, one
        # creates the tables and the others find them whole.
        con.execute("BEGIN IMMEDIATE")
        try:
            if not self._verify_tables(con):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            # IMMEDIATE takes the write lock up front: two writers that both read first and
            # then upgrade would deadlock, one of them failing with "database is locked".
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise RegistryError(f"{self.path}: cannot write ({exc})") from None
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        # One read transaction: all rows come from the same snapshot under WAL.
        con.execute("BEGIN")
        try:
            yield con
        finally:
            con.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- checks ------------------------------------------------------------------------
    @staticmethod
    def _foreign(con: sqlite3.Connection, fingerprint: str) -> tuple[str, int] | None:
        """(fingerprint, count) of speakers enrolled with a model other than `fingerprint`."""
        return con.execute(
            "SELECT model_fingerprint, COUNT(*) FROM speakers WHERE model_fingerprint != ? "
            "GROUP BY model_fingerprint",
            (fingerprint,),
        ).fetchone()

    def _check_fingerprint(self) -> None:
        if self.model_fingerprint is None:
            return
        with self._read() as con:
            row = self._foreign(con, self.model_fingerprint)
        if row is not None:
            raise RegistryError(
                f"{self.path}: {row[1]} speaker(s) were enrolled with model {row[0]}, "
                f"this model is {self.model_fingerprint}; re-enrol them or use another registry"
            )

    def _require_model(self, fingerprint: str | None) -> str:
        fp = fingerprint if fingerprint is not None else self.model_fingerprint
        if fp is None:
            raise RegistryError(f"{self.path}: opened without a model; cannot add embeddings")
        if self.model_fingerprint is not None and fp != self.model_fingerprint:
            raise RegistryError(
                f"{self.path}: embeddings from model {fp} refused, this registry holds model "
                f"{self.model_fingerprint}"
            )
        return fp

    # -- writes ------------------------------------------------------------------------
    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        replace: bool = False,
        metadata: dict[str, Any] | None = None,
        model_fingerprint: str | None = None,
    ) -> SpeakerRecord:
        """Add utterance embeddings `(n, D)` to speaker `name` (created if new).

        An existing speaker keeps its utterances and gains these (its centroid recomputed
        from all of them), unless `replace=True`, which starts it afresh. `metadata` (JSON
        values) is merged into the stored metadata. Raises RegistryError for a bad name,
        a non-finite or wrongly sized embedding, or a model other than the registry's.
        """
        name = validate_name(name)
        fp = self._require_model(model_fingerprint)
        emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
            raise RegistryError(f"speaker {name!r}: embeddings must be (n, dim), got {emb.shape}")
        if not np.isfinite(emb).all() or (np.linalg.norm(emb, axis=1) == 0).any():
            raise RegistryError(f"speaker {name!r}: embeddings contain NaN, inf or zero rows")
        emb = normalize_rows(emb)
        try:
            meta_json = json.dumps(metadata or {})
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"speaker {name!r}: metadata is not JSON ({exc})") from None
        now = time.time()
        with self._write() as con:
            other = self._foreign(con, fp)
            if other is not None:
                raise RegistryError(
                    f"{self.path}: embeddings from model {fp} refused, the registry holds "
                    f"{other[1]} speaker(s) of model {other[0]}"
                )
            row = con.execute(
                "SELECT id, dim, created, metadata FROM speakers WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and replace:
                con.execute("DELETE FROM speakers WHERE id = ?", (row[0],))
                row = None
            if row is not None and row[1] != emb.shape[1]:
                raise RegistryError(
                    f"speaker {name!r}: embedding size {emb.shape[1]} differs from the "
                    f"stored {row[1]}"
                )
            if row is None:
                cur = con.execute(
                    "INSERT INTO speakers (name, model_fingerprint, dim, centroid, n_utterances, "
                    "created, updated, metadata) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                    (name, fp, emb.shape[1], b"", now, now, meta_json),
                )
                speaker_id, created, merged = cur.lastrowid, now, metadata or {}
            else:
                speaker_id, created = row[0], row[2]
                merged = {**json.loads(row[3]), **(metadata or {})}
            con.executemany(
                "INSERT INTO embeddings (speaker_id, vector, created) VALUES (?, ?, ?)",
                [(speaker_id, v.tobytes(), now) for v in emb],
            )
            stored = self._vectors(con, speaker_id, emb.shape[1], name)
            centroid = mean_embedding(stored)
            con.execute(
                "UPDATE speakers SET centroid = ?, n_utterances = ?, updated = ?, metadata = ? "
                "WHERE id = ?",
                (centroid.tobytes(), len(stored), now, json.dumps(merged), speaker_id),
            )
        return SpeakerRecord(name, centroid, len(stored), fp, created, now, merged)

    def remove(self, name: str) -> None:
        """Delete speaker `name` and its embeddings; RegistryError if it is not enrolled."""
        with self._write() as con:
            cur = con.execute("DELETE FROM speakers WHERE name = ?", (str(name).strip(),))
            if cur.rowcount == 0:
                raise RegistryError(f"speaker {name!r}: not enrolled in {self.path}")

    # -- reads -------------------------------------------------------------------------
    def _vectors(self, con: sqlite3.Connection, speaker_id: int, dim: int, name: str) -> np.ndarray:
        blobs = [
            r[0]
            for r in con.execute(
                "SELECT vector FROM embeddings WHERE speaker_id = ? ORDER BY id", (speaker_id,)
            )
        ]
        return np.stack([self._decode(b, dim, name) for b in blobs])

    def _decode(self, blob: bytes, dim: int, name: str) -> np.ndarray:
        if len(blob) != dim * 4:
            raise RegistryError(
                f"{self.path}: speaker {name!r} has a corrupt embedding "
                f"({len(blob)} bytes, expected {dim * 4})"
            )
        return np.frombuffer(blob, dtype=np.float32)

    def _record(self, row: tuple) -> SpeakerRecord:
        name, fp, dim, centroid, n, created, updated, meta = row
        return SpeakerRecord(
            name, self._decode(centroid, dim, name), n, fp, created, updated, json.loads(meta)
        )

    _COLUMNS = "name, model_fingerprint, dim, centroid, n_utterances, created, updated, metadata"

    def get(self, name: str) -> SpeakerRecord:
        """The record of speaker `name`; RegistryError if it is not enrolled."""
        with self._read() as con:
            row = con.execute(
                f"SELECT {self._COLUMNS} FROM speakers WHERE name = ?", (str(name).strip(),)
            ).fetchone()
        if row is None:
            raise RegistryError(f"speaker {name!r}: not enrolled in {self.path}")
        return self._record(row)

    def embeddings(self, name: str) -> np.ndarray:
        """The stored per-utterance embeddings `(n, D)` of speaker `name`."""
        with self._read() as con:
            row = con.execute(
                "SELECT id, dim FROM speakers WHERE name = ?", (str(name).strip(),)
            ).fetchone()
            if row is None:
                raise RegistryError(f"speaker {name!r}: not enrolled in {self.path}")
            return self._vectors(con, row[0], row[1], name)

    def speakers(self) -> list[SpeakerRecord]:
        """All enrolled speakers, sorted by name."""
        with self._read() as con:
            rows = con.execute(f"SELECT {self._COLUMNS} FROM speakers ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    def names(self) -> list[str]:
        """Enrolled speaker names, sorted."""
        with self._read() as con:
            return [r[0] for r in con.execute("SELECT name FROM speakers ORDER BY name")]

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """Names and their centroids `(N, D)` (an empty `(0, 0)` array when none)."""
        records = self.speakers()
        if not records:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r.name for r in records], np.stack([r.centroid for r in records])

    def __contains__(self, name: object) -> bool:
        with self._read() as con:
            return (
                con.execute(
                    "SELECT 1 FROM speakers WHERE name = ?", (str(name).strip(),)
                ).fetchone()
                is not None
            )

    def __len__(self) -> int:
        with self._read() as con:
            return con.execute("SELECT COUNT(*) FROM speakers").fetchone()[0]
