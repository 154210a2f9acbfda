"""Enrolled speakers: names, per-utterance embeddings, centroids, the model behind them.

Two stores behind one interface (`BaseRegistry`), picked by `open_registry` from the
target: a SQLite file (`Registry`, stdlib `sqlite3`) for one machine, or a PostgreSQL
database (`PostgresRegistry`, a ``postgresql://`` URL, at the end of this module) that
several servers share. SQLite runs in WAL mode, so readers never block the writer, with a busy
timeout so concurrent writers queue instead of failing. Every write is one transaction
that first bumps the change counter, which serialises writers (SQLite's `BEGIN IMMEDIATE`,
PostgreSQL's row lock on the counter), so several processes can enrol and identify at once
and a reader sees a speaker either whole or not at all.

Schema (version 2; a version-1 file is upgraded in place when opened):
- `meta(key, value)`: `schema_version`; `model_fingerprint` (the model of every enrolled
  speaker, set by the first enrolment and cleared when the last speaker goes, so an add
  checks one row instead of scanning the speakers); `chunk_policy` (how that model's audio
  became chunks, `ChunkPolicy.describe`, kept the same way: the fingerprint covers the
  weights only, and the same weights under another chunk length or short-speech rule give
  other embeddings; a registry written before it adopts the policy of its next write);
  `generation` (the change counter every
  write bumps); `instance` (a random id, so a recreated registry is never mistaken for the
  old one).
- `speakers(id, name UNIQUE, model_fingerprint, dim, centroid BLOB, n_utterances, created,
  updated, metadata JSON, gen)`; the centroid is the renormalised mean of the L2-normalised
  utterance embeddings, kept up to date on every write so identification reads one row each;
  `gen` is the generation that last wrote the row (what `changes` reads).
- `embeddings(id, speaker_id, vector BLOB, created, source)`: one float32 row per utterance,
  kept so later enrolments can add utterances; `source` names the file it came from (bulk
  enrolment skips files already enrolled).
- `removed(name, gen)`: speakers removed since, so an in-memory index can follow deletions.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from voxid.errors import (
    ModelMismatch,
    NoSuchRegistry,
    RegistryError,
    RegistryUnavailable,
    UnknownSpeaker,
)
from voxid.numeric import normalize_rows

SCHEMA_VERSION = 2
MAX_NAME_LENGTH = 64
#: What identify() (and the live stream) answers when nobody matches.
UNKNOWN = "unknown"
#: Names that are never a speaker's: identify()'s answer for no match.
RESERVED_NAMES = frozenset({UNKNOWN})
_NAME_RE = re.compile(r"^\w[\w .,'()@+-]*$")
#: Rows fetched at a time when loading every centroid (bounded transient memory).
_FETCH_ROWS = 20_000
#: Names per `IN (...)` list (SQLite allows 32,766 parameters; PostgreSQL 65,535).
_IN_CHUNK = 500

_SCHEMA_V1 = """
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
#: Version 1 -> 2 (SQLite): the change log columns and tables.
_UPGRADE_V2 = """
ALTER TABLE speakers ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE embeddings ADD COLUMN source TEXT;
CREATE TABLE IF NOT EXISTS removed (name TEXT PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS speakers_gen ON speakers(gen);
CREATE INDEX IF NOT EXISTS embeddings_source ON embeddings(source) WHERE source IS NOT NULL
"""
#: The columns every query relies on; a database without them is not a voxid registry
#: (version 1 lacks `gen`, `source` and `removed`, which the upgrade adds).
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


@dataclass(frozen=True)
class Enrolment:
    """One speaker's part of a bulk enrolment (`BaseRegistry.add_many`): a name, its
    utterance embeddings `(n, D)`, optionally the file each came from, and metadata."""

    name: str
    embeddings: np.ndarray
    sources: Sequence[str | None] | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Changes:
    """What changed in a registry since a generation (`BaseRegistry.changes`).

    `full`: every speaker is in `names` / `centroids` (a first load, or the registry was
    recreated); otherwise only those written since, plus the `removed` names."""

    instance: str
    generation: int
    full: bool
    names: list[str]
    centroids: np.ndarray
    removed: list[str]


def check_embeddings(name: str, embeddings: np.ndarray) -> np.ndarray:
    """`embeddings` as L2-normalised float32 `(n, D)` rows; RegistryError for an empty,
    non-finite or zero row."""
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise RegistryError(f"speaker {name!r}: embeddings must be (n, dim), got {emb.shape}")
    if not np.isfinite(emb).all() or (np.linalg.norm(emb, axis=1) == 0).any():
        raise RegistryError(f"speaker {name!r}: embeddings contain NaN, inf or zero rows")
    return normalize_rows(emb)


def _json(name: str, metadata: dict[str, Any] | None) -> str:
    try:
        return json.dumps(metadata or {})
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"speaker {name!r}: metadata is not JSON ({exc})") from None


def is_url(target: object) -> bool:
    """True for a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_registry(
    target: str | os.PathLike[str],
    model_fingerprint: str | None,
    *,
    timeout: float = 30.0,
    create: bool = True,
    chunk_policy: str | None = None,
) -> BaseRegistry:
    """The registry at `target`: a ``postgresql://user@host:port/db`` URL opens a
    `PostgresRegistry`, anything else a SQLite file (`Registry`). Arguments as `Registry`."""
    kw: dict[str, Any] = {"timeout": timeout, "create": create, "chunk_policy": chunk_policy}
    if is_url(target):
        return PostgresRegistry(str(target), model_fingerprint, **kw)
    return Registry(target, model_fingerprint, **kw)


def policy_change(stored: str, current: str) -> str:
    """What differs between two `ChunkPolicy.describe` lines, for a message.

    >>> policy_change('{"min_input_seconds":null,"seconds":1.0}',
    ...               '{"min_input_seconds":2.0,"seconds":1.0}')
    'min_input_seconds null -> 2.0'
    """
    try:
        old, new = json.loads(stored), json.loads(current)
    except ValueError:
        return f"{stored} -> {current}"
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{stored} -> {current}"
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k} {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
        for k in keys
        if old.get(k) != new.get(k)
    )


class BaseRegistry:
    """What every registry does, in SQL both SQLite and PostgreSQL speak.

    A subclass provides the connections (`_write`, `_read`: context managers yielding a
    connection inside one transaction), its placeholder style (`_q`), `label` (how messages
    name it) and, where it has a faster way, `_bulk_insert` and `generation`.
    """

    label: str
    model_fingerprint: str | None
    #: How the model's audio becomes chunks (`ChunkPolicy.describe`), or None: not checked.
    chunk_policy: str | None = None
    #: The integer type for casts (`generation` outgrows PostgreSQL's 32-bit INTEGER).
    _INT = "INTEGER"

    # -- dialect -----------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        """`sql` with this driver's placeholders (written with `?`)."""
        return sql

    @contextmanager
    def _write(self) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    @contextmanager
    def _read(self) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def _schema_version(
        self, con: Any, tables: Mapping[str, set[str]], required: Mapping[str, set[str]]
    ) -> int:
        """The schema version of the registry whose tables hold `tables`' columns;
        RegistryError naming the first table or column of `required` that is missing
        (another program's database), or a schema newer than this voxid."""
        for table, needed in required.items():
            if table not in tables:
                raise RegistryError(f"{self.label}: not a voxid registry (no {table} table)")
            missing = sorted(needed - tables[table])
            if missing:
                raise RegistryError(
                    f"{self.label}: not a voxid registry (table {table} has no {missing[0]} column)"
                )
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise RegistryError(f"{self.label}: not a voxid registry (no schema version)") from None
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.label}: registry schema {version} is newer than this voxid")
        return version

    def _x(self, con: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return con.execute(self._q(sql), params)

    def _bulk_insert(self, con: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert many rows into `table (columns)`."""
        marks = ", ".join("?" * len(columns.split(",")))
        con.executemany(self._q(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), rows)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end).

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> reg.close()
        """

    # -- generations -------------------------------------------------------------------
    def _read_generation(self, con: Any) -> tuple[str, int]:
        rows = dict(
            self._x(con, "SELECT key, value FROM meta WHERE key IN ('instance', 'generation')")
        )
        return rows.get("instance", ""), int(rows.get("generation", 0))

    def generation(self) -> tuple[str, int]:
        """`(instance, generation)`: changes whenever anything in the registry changed, in
        this process or any other. Cheap: what an in-memory index checks per request.

        Returns
        -------
        tuple of (str, int)
            The registry instance's id and its change counter.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> before = reg.generation()
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:1])
        >>> reg.generation() != before
        True
        """
        with self._read() as con:
            return self._read_generation(con)

    def changes(self, since: tuple[str, int] | None = None) -> Changes:
        """The speakers written and removed after generation `since`.

        Parameters
        ----------
        since : tuple of (str, int), optional
            A value of `generation`; None (or another instance's) gives every speaker.

        Returns
        -------
        Changes
            The names and centroids written since (all of them when `full`), and the
            names removed since.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:1])
        >>> seen = reg.generation()
        >>> _ = reg.add("sam", np.eye(4, dtype=np.float32)[1:2])
        >>> reg.changes(seen).names, reg.changes().full
        (['sam'], True)
        """
        with self._read() as con:
            instance, gen = self._read_generation(con)
            full = since is None or since[0] != instance or since[1] > gen
            after = 0 if since is None else since[1]
            if full:
                cur = self._x(con, "SELECT name, dim, centroid FROM speakers")
                removed: list[str] = []
            else:
                cur = self._x(
                    con, "SELECT name, dim, centroid FROM speakers WHERE gen > ?", (after,)
                )
            names, blocks = [], []
            while rows := cur.fetchmany(_FETCH_ROWS):
                names += [r[0] for r in rows]
                blocks.append(np.stack([self._decode(r[2], r[1], r[0]) for r in rows]))
            if not full:
                removed = [
                    r[0] for r in self._x(con, "SELECT name FROM removed WHERE gen > ?", (after,))
                ]
        dims = {b.shape[1] for b in blocks}
        if len(dims) > 1:
            raise RegistryError(f"{self.label}: centroids of different sizes {sorted(dims)}")
        cents = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
        return Changes(instance, gen, full, names, cents, removed)

    def _bump(self, con: Any) -> int:
        """Advance the change counter: the first statement of every write, so writers queue
        on it and generations follow commit order."""
        row = self._x(
            con,
            f"UPDATE meta SET value = CAST(CAST(value AS {self._INT}) + 1 AS TEXT) "
            "WHERE key = 'generation' RETURNING value",
        ).fetchone()
        return int(row[0])

    # -- checks ------------------------------------------------------------------------
    def _stored_model(self, con: Any) -> str | None:
        return self._meta(con, "model_fingerprint")

    def _meta(self, con: Any, key: str) -> str | None:
        row = self._x(con, "SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _policy_refused(self, con: Any, stored: str | None) -> ModelMismatch | None:
        if self.chunk_policy is None or stored is None or stored == self.chunk_policy:
            return None
        return ModelMismatch(
            f"{self.label}: {self._count(con)} speaker(s) were enrolled with this model's "
            f"weights under another chunk policy ({policy_change(stored, self.chunk_policy)}); "
            "re-enrol them or use another registry"
        )

    def _count(self, con: Any) -> int:
        return int(self._x(con, "SELECT COUNT(*) FROM speakers").fetchone()[0])

    def _check_fingerprint(self) -> None:
        if self.model_fingerprint is None:
            return
        with self._read() as con:
            stored = self._stored_model(con)
            if stored is None:
                return
            if stored == self.model_fingerprint:
                refused = self._policy_refused(con, self._meta(con, "chunk_policy"))
                if refused is not None:
                    raise refused
                return
            n = self._count(con)
        raise ModelMismatch(
            f"{self.label}: {n} speaker(s) were enrolled with model {stored}, "
            f"this model is {self.model_fingerprint}; re-enrol them or use another registry"
        )

    def _require_model(self, fingerprint: str | None) -> str:
        fp = fingerprint if fingerprint is not None else self.model_fingerprint
        if fp is None:
            raise RegistryError(f"{self.label}: opened without a model; cannot add embeddings")
        if self.model_fingerprint is not None and fp != self.model_fingerprint:
            raise ModelMismatch(
                f"{self.label}: embeddings from model {fp} refused, this registry holds model "
                f"{self.model_fingerprint}"
            )
        return fp

    def _claim_model(self, con: Any, fp: str) -> None:
        """Make `fp` the registry's model, or refuse it: one row read per write."""
        stored = self._stored_model(con)
        if stored is None:
            self._x(con, "INSERT INTO meta (key, value) VALUES ('model_fingerprint', ?)", (fp,))
        elif stored != fp:
            raise ModelMismatch(
                f"{self.label}: embeddings from model {fp} refused, the registry holds "
                f"{self._count(con)} speaker(s) of model {stored}"
            )
        if self.chunk_policy is not None:
            policy = self._meta(con, "chunk_policy")
            if policy is None:
                self._x(
                    con, "INSERT INTO meta (key, value) VALUES ('chunk_policy', ?)",
                    (self.chunk_policy,),
                )  # fmt: skip
            elif (refused := self._policy_refused(con, policy)) is not None:
                raise refused

    # -- writes ------------------------------------------------------------------------
    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        replace: bool = False,
        metadata: dict[str, Any] | None = None,
        model_fingerprint: str | None = None,
        sources: Sequence[str | None] | None = None,
    ) -> SpeakerRecord:
        """Add utterance embeddings to speaker `name` (created if new).

        An existing speaker keeps its utterances and gains these (its centroid recomputed
        from all of them), unless `replace=True`, which starts it afresh. The cost does not
        grow with the number of enrolled speakers.

        Parameters
        ----------
        name : str
            The speaker's name (`validate_name`'s rule).
        embeddings : numpy.ndarray
            Utterance embeddings ``(n, D)``, finite and non-zero.
        replace : bool
            Drop the speaker's earlier utterances.
        metadata : dict, optional
            JSON values merged into the stored metadata.
        model_fingerprint : str, optional
            The model the embeddings come from (default: the registry's).
        sources : sequence of str or None, optional
            The file each embedding came from.

        Returns
        -------
        SpeakerRecord
            The speaker as now stored.

        Raises
        ------
        RegistryError
            A bad name, a non-finite or wrongly sized embedding (`ModelMismatch`: a model
            other than the registry's).

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> reg.add("ruth", np.eye(4, dtype=np.float32)[:2]).n_utterances
        2
        >>> reg.add("ruth", np.eye(4, dtype=np.float32)[:1], replace=True).n_utterances
        1
        """
        name = validate_name(name)
        fp = self._require_model(model_fingerprint)
        emb = check_embeddings(name, embeddings)
        meta_json = _json(name, metadata)
        srcs = self._sources(name, emb, sources)
        now = time.time()
        with self._write() as con:
            gen = self._bump(con)
            self._claim_model(con, fp)
            return self._add_one(con, gen, fp, name, emb, srcs, replace, metadata, meta_json, now)

    @staticmethod
    def _sources(
        name: str, emb: np.ndarray, sources: Sequence[str | None] | None
    ) -> list[str | None]:
        if sources is None:
            return [None] * len(emb)
        if len(sources) != len(emb):
            raise RegistryError(
                f"speaker {name!r}: {len(sources)} sources for {len(emb)} embeddings"
            )
        return [None if s is None else str(s) for s in sources]

    def _add_one(
        self,
        con: Any,
        gen: int,
        fp: str,
        name: str,
        emb: np.ndarray,
        sources: list[str | None],
        replace: bool,
        metadata: dict[str, Any] | None,
        meta_json: str,
        now: float,
    ) -> SpeakerRecord:
        row = self._x(
            con, "SELECT id, dim, created, metadata FROM speakers WHERE name = ?", (name,)
        ).fetchone()
        if row is not None and replace:
            self._x(con, "DELETE FROM speakers WHERE id = ?", (row[0],))
            row = None
        if row is not None and row[1] != emb.shape[1]:
            raise ModelMismatch(
                f"speaker {name!r}: embedding size {emb.shape[1]} differs from the stored {row[1]}"
            )
        if row is None:
            speaker_id = self._x(
                con,
                "INSERT INTO speakers (name, model_fingerprint, dim, centroid, n_utterances, "
                "created, updated, metadata, gen) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?) RETURNING id",
                (name, fp, emb.shape[1], b"", now, now, meta_json, gen),
            ).fetchone()[0]
            self._x(con, "DELETE FROM removed WHERE name = ?", (name,))
            created, merged = now, metadata or {}
        else:
            speaker_id, created = row[0], row[2]
            merged = {**json.loads(row[3]), **(metadata or {})}
        self._bulk_insert(
            con,
            "embeddings",
            "speaker_id, vector, created, source",
            [(speaker_id, v.tobytes(), now, s) for v, s in zip(emb, sources, strict=True)],
        )
        stored = self._vectors(con, speaker_id, emb.shape[1], name)
        centroid = mean_embedding(stored)
        self._x(
            con,
            "UPDATE speakers SET centroid = ?, n_utterances = ?, updated = ?, metadata = ?, "
            "gen = ? WHERE id = ?",
            (centroid.tobytes(), len(stored), now, json.dumps(merged), gen, speaker_id),
        )
        return SpeakerRecord(name, centroid, len(stored), fp, created, now, merged)

    def add_many(
        self, enrolments: Iterable[Enrolment], *, model_fingerprint: str | None = None
    ) -> int:
        """Enrol many speakers in one transaction (all or none).

        New speakers are inserted in bulk, so the cost per speaker stays constant whatever
        the registry's size; a name already enrolled gains the utterances as with `add`.
        Everything is checked before anything is written.

        Parameters
        ----------
        enrolments : iterable of Enrolment
            Each speaker's name, embeddings ``(n, D)``, sources and metadata.
        model_fingerprint : str, optional
            The model the embeddings come from (default: the registry's).

        Returns
        -------
        int
            How many speakers were written.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> eye = np.eye(4, dtype=np.float32)
        >>> reg.add_many([Enrolment("ruth", eye[:2]), Enrolment("sam", eye[2:])])
        2
        """
        fp = self._require_model(model_fingerprint)
        grouped: dict[str, list[Any]] = {}  # name -> [embeddings, sources, metadata]
        for e in enrolments:
            name = validate_name(e.name)
            emb = check_embeddings(name, e.embeddings)
            srcs = self._sources(name, emb, e.sources)
            _json(name, e.metadata)
            if name in grouped:
                g = grouped[name]
                if g[0].shape[1] != emb.shape[1]:
                    raise RegistryError(f"speaker {name!r}: embeddings of different sizes")
                g[0], g[1], g[2] = (
                    np.vstack([g[0], emb]),
                    g[1] + srcs,
                    {**g[2], **(e.metadata or {})},
                )
            else:
                grouped[name] = [emb, srcs, dict(e.metadata or {})]
        if not grouped:
            return 0
        now = time.time()
        with self._write() as con:
            gen = self._bump(con)
            self._claim_model(con, fp)
            names = list(grouped)
            existing: set[str] = set()
            for i in range(0, len(names), _IN_CHUNK):
                part = names[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(part))
                existing |= {
                    r[0]
                    for r in self._x(
                        con, f"SELECT name FROM speakers WHERE name IN ({marks})", part
                    )
                }
            fresh = [n for n in names if n not in existing]
            if fresh:
                self._bulk_insert(
                    con,
                    "speakers",
                    "name, model_fingerprint, dim, centroid, n_utterances, created, updated, "
                    "metadata, gen",
                    [
                        (
                            n,
                            fp,
                            grouped[n][0].shape[1],
                            mean_embedding(grouped[n][0]).tobytes(),
                            len(grouped[n][0]),
                            now,
                            now,
                            json.dumps(grouped[n][2]),
                            gen,
                        )
                        for n in fresh
                    ],
                )
                # Every row this transaction wrote carries its generation: the new ids in
                # one indexed query instead of one per speaker.
                ids = dict(self._x(con, "SELECT name, id FROM speakers WHERE gen = ?", (gen,)))
                self._bulk_insert(
                    con,
                    "embeddings",
                    "speaker_id, vector, created, source",
                    [
                        (ids[n], v.tobytes(), now, s)
                        for n in fresh
                        for v, s in zip(grouped[n][0], grouped[n][1], strict=True)
                    ],
                )
                for i in range(0, len(fresh), _IN_CHUNK):
                    part = fresh[i : i + _IN_CHUNK]
                    marks = ", ".join("?" * len(part))
                    self._x(con, f"DELETE FROM removed WHERE name IN ({marks})", part)
            for n in names:
                if n in existing:
                    emb, srcs, meta = grouped[n]
                    self._add_one(con, gen, fp, n, emb, srcs, False, meta, json.dumps(meta), now)
        return len(names)

    def remove(self, name: str) -> None:
        """Delete speaker `name` and its embeddings.

        Parameters
        ----------
        name : str
            An enrolled name.

        Raises
        ------
        UnknownSpeaker
            When `name` is not enrolled.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:1])
        >>> reg.remove("ruth")
        >>> "ruth" in reg
        False
        """
        clean = str(name).strip()
        with self._write() as con:
            gen = self._bump(con)
            cur = self._x(con, "DELETE FROM speakers WHERE name = ?", (clean,))
            if cur.rowcount == 0:
                raise UnknownSpeaker(f"speaker {name!r}: not enrolled in {self.label}")
            self._x(
                con,
                "INSERT INTO removed (name, gen) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET gen = excluded.gen",
                (clean, gen),
            )
            if self._x(con, "SELECT 1 FROM speakers LIMIT 1").fetchone() is None:
                # Nobody left: the next enrolment may use any model, as with a new registry.
                self._x(con, "DELETE FROM meta WHERE key IN ('model_fingerprint', 'chunk_policy')")

    def enrolled_sources(self, sources: Sequence[str]) -> set[str]:
        """Which of `sources` (file names given at enrolment) are already enrolled.

        Parameters
        ----------
        sources : sequence of str
            File names, as given to `add` or `add_many`.

        Returns
        -------
        set of str

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:1], sources=["r1.wav"])
        >>> reg.enrolled_sources(["r1.wav", "r2.wav"])
        {'r1.wav'}
        """
        found: set[str] = set()
        items = [str(s) for s in sources]
        with self._read() as con:
            for i in range(0, len(items), _IN_CHUNK):
                part = items[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(part))
                found |= {
                    r[0]
                    for r in self._x(
                        con, f"SELECT source FROM embeddings WHERE source IN ({marks})", part
                    )
                }
        return found

    # -- reads -------------------------------------------------------------------------
    def _vectors(self, con: Any, speaker_id: int, dim: int, name: str) -> np.ndarray:
        blobs = [
            r[0]
            for r in self._x(
                con, "SELECT vector FROM embeddings WHERE speaker_id = ? ORDER BY id", (speaker_id,)
            )
        ]
        return np.stack([self._decode(b, dim, name) for b in blobs])

    def _decode(self, blob: bytes, dim: int, name: str) -> np.ndarray:
        if len(blob) != dim * 4:
            raise RegistryError(
                f"{self.label}: speaker {name!r} has a corrupt embedding "
                f"({len(blob)} bytes, expected {dim * 4})"
            )
        return np.frombuffer(bytes(blob), dtype=np.float32)

    def _record(self, row: tuple[Any, ...]) -> SpeakerRecord:
        name, fp, dim, centroid, n, created, updated, meta = row
        return SpeakerRecord(
            name, self._decode(centroid, dim, name), n, fp, created, updated, json.loads(meta)
        )

    _COLUMNS = "name, model_fingerprint, dim, centroid, n_utterances, created, updated, metadata"

    def get(self, name: str) -> SpeakerRecord:
        """The record of speaker `name`.

        Parameters
        ----------
        name : str
            An enrolled name.

        Returns
        -------
        SpeakerRecord
            Centroid ``(D,)``, utterance count, model, times and metadata.

        Raises
        ------
        UnknownSpeaker
            When `name` is not enrolled.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:1], metadata={"team": "a"})
        >>> reg.get("ruth").metadata
        {'team': 'a'}
        """
        with self._read() as con:
            row = self._x(
                con, f"SELECT {self._COLUMNS} FROM speakers WHERE name = ?", (str(name).strip(),)
            ).fetchone()
        if row is None:
            raise UnknownSpeaker(f"speaker {name!r}: not enrolled in {self.label}")
        return self._record(row)

    def embeddings(self, name: str) -> np.ndarray:
        """The stored per-utterance embeddings of speaker `name`.

        Parameters
        ----------
        name : str
            An enrolled name (`UnknownSpeaker` otherwise).

        Returns
        -------
        numpy.ndarray
            Float32 ``(n, D)``, unit rows, in enrolment order.

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:2])
        >>> reg.embeddings("ruth").shape
        (2, 4)
        """
        with self._read() as con:
            row = self._x(
                con, "SELECT id, dim FROM speakers WHERE name = ?", (str(name).strip(),)
            ).fetchone()
            if row is None:
                raise UnknownSpeaker(f"speaker {name!r}: not enrolled in {self.label}")
            return self._vectors(con, row[0], row[1], name)

    def speakers(self) -> list[SpeakerRecord]:
        """All enrolled speakers, sorted by name.

        Returns
        -------
        list of SpeakerRecord

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("sam", np.eye(4, dtype=np.float32)[:1])
        >>> [s.name for s in reg.speakers()]
        ['sam']
        """
        with self._read() as con:
            rows = self._x(con, f"SELECT {self._COLUMNS} FROM speakers ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    def names(self) -> list[str]:
        """Enrolled speaker names, sorted.

        Returns
        -------
        list of str

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> eye = np.eye(4, dtype=np.float32)
        >>> _ = reg.add("sam", eye[:1]), reg.add("ruth", eye[1:2])
        >>> reg.names()
        ['ruth', 'sam']
        """
        with self._read() as con:
            return [r[0] for r in self._x(con, "SELECT name FROM speakers ORDER BY name")]

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """Names and their centroids, sorted by name. Reads every row: the recogniser keeps
        an `index.SpeakerIndex` instead.

        Returns
        -------
        tuple of (list of str, numpy.ndarray)
            The names and their centroids ``(N, D)`` (an empty ``(0, 0)`` array when none).

        Examples
        --------
        >>> import tempfile
        >>> reg = Registry(Path(tempfile.mkdtemp()) / "speakers.db", "model-a")
        >>> _ = reg.add("ruth", np.eye(4, dtype=np.float32)[:2])
        >>> names, cents = reg.centroids()
        >>> names, cents.shape
        (['ruth'], (1, 4))
        """
        records = self.speakers()
        if not records:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r.name for r in records], np.stack([r.centroid for r in records])

    def __contains__(self, name: object) -> bool:
        with self._read() as con:
            row = self._x(con, "SELECT 1 FROM speakers WHERE name = ?", (str(name).strip(),))
            return row.fetchone() is not None

    def __len__(self) -> int:
        with self._read() as con:
            return self._count(con)


class Registry(BaseRegistry):
    """Enrolled speakers of one model in a SQLite file.

    Arguments:
        path: the database file (created with its folder if missing, unless `create=False`).
        model_fingerprint: the model whose embeddings this registry holds; speakers enrolled
            with another model are refused with a message naming both. `None` opens it for
            listing and removal only.
        timeout: seconds a writer waits for another writer's lock.
        create: False: the file must exist (RegistryError "no such registry" otherwise) and
            nothing is ever created; for commands that only read or remove.
        chunk_policy: how the model's audio becomes chunks (`ChunkPolicy.describe`); speakers
            enrolled with the same weights under another policy are refused likewise.
            `None` does not check it.

    >>> import tempfile, numpy as np
    >>> reg = Registry(tempfile.mkdtemp() + "/speakers.db", "model-a")
    >>> reg.add("alice", np.eye(3)[:2]).n_utterances
    2
    >>> reg.names()
    ['alice']
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model_fingerprint: str | None,
        *,
        timeout: float = 30.0,
        create: bool = True,
        chunk_policy: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self.model_fingerprint = model_fingerprint
        self.chunk_policy = chunk_policy
        self.timeout = timeout
        self.create = create
        self._local = threading.local()
        if self.path.exists() and self.path.is_dir():
            raise RegistryError(f"{self.path}: is a folder, not a registry file")
        if not create and not self.path.exists():
            raise NoSuchRegistry(f"{self.path}: no such registry")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()
        self._check_fingerprint()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # One connection per thread and process: sqlite3 connections must not cross threads,
        # and a connection inherited through fork() would share locks with the parent.
        key = os.getpid()
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None and getattr(self._local, "pid", None) == key:
            return con
        # mode=rw: SQLite would otherwise create the file of a must-exist registry that was
        # deleted since (each thread connects on its own).
        target: str | Path = self.path
        uri = not self.create
        if uri:
            target = self.path.absolute().as_uri() + "?mode=rw"
        try:
            con = sqlite3.connect(
                target, timeout=self.timeout, isolation_level=None, uri=uri, check_same_thread=True
            )
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from None
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            # Checked before anything is written, so another program's database is refused
            # as it was, not turned to WAL or given our tables.
            version = self._check_schema(con)
            if not version and not self.create:
                raise RegistryError(f"{self.path}: not a voxid registry (it has no tables)")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                self._init_schema(con)
        except sqlite3.DatabaseError as exc:
            con.close()
            raise self._open_error(exc) from None
        except BaseException:
            con.close()
            raise
        self._local.con, self._local.pid, self._local.seen = con, key, None
        return con

    def _open_error(self, exc: sqlite3.DatabaseError) -> RegistryError:
        if not self.path.exists():
            return NoSuchRegistry(f"{self.path}: no such registry")
        if "locked" in str(exc) or "busy" in str(exc):
            return RegistryUnavailable(f"{self.path}: cannot open ({exc})")
        return RegistryError(f"{self.path}: not a voxid registry ({exc})")

    def _check_schema(self, con: sqlite3.Connection) -> int:
        """The schema version of a voxid registry, 0 for a database without tables (a new
        file); RegistryError for anything else, such as another program's `speakers` table."""
        con.execute("BEGIN")
        try:
            return self._verify_tables(con)
        finally:
            con.execute("COMMIT")

    def _verify_tables(self, con: sqlite3.Connection) -> int:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if not names:
            return 0
        # Only voxid's own tables are looked into (another program's may have any name).
        tables = {
            t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")}
            for t in names
            if t in _REQUIRED_COLUMNS
        }
        return self._schema_version(con, tables, _REQUIRED_COLUMNS)

    def _init_schema(self, con: sqlite3.Connection) -> None:
        # One IMMEDIATE transaction: when several processes create or upgrade the file at
        # once, one does it and the others find it whole.
        con.execute("BEGIN IMMEDIATE")
        try:
            version = self._verify_tables(con)
            if version == 0:
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
                version = 1
            if version == 1:
                for statement in _UPGRADE_V2.split(";"):
                    con.execute(statement)
                # Version 1 refused mixing models, so the first speaker's is everyone's.
                row = con.execute("SELECT model_fingerprint FROM speakers LIMIT 1").fetchone()
                if row is not None:
                    con.execute("INSERT INTO meta VALUES ('model_fingerprint', ?)", (row[0],))
                con.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("generation", "1"), ("instance", uuid.uuid4().hex)],
                )
                con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
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
            unavailable = "locked" in str(exc) or "busy" in str(exc)
            raise (RegistryUnavailable if unavailable else RegistryError)(
                f"{self.path}: cannot write ({exc})"
            ) from None
        # This connection's own commits leave its data_version as it was.
        self._local.seen = None
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

    def generation(self) -> tuple[str, int]:
        """`(instance, generation)`, re-read only when `PRAGMA data_version` says another
        connection committed since (this connection's own writes clear the cache), so an
        unchanged registry costs no table read."""
        con = self._connect()
        version = con.execute("PRAGMA data_version").fetchone()[0]
        seen = self._local.seen
        if seen is not None and seen[0] == version:
            cached: tuple[str, int] = seen[1]
            return cached
        token = super().generation()
        self._local.seen = (version, token)
        return token

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


# --- PostgreSQL (was registry_pg.py, which imported BaseRegistry from here while
# open_registry imported PostgresRegistry from there: a long file is better than a circle).
# Enrolled speakers in PostgreSQL: the `BaseRegistry` that several servers share.
#
# ``--registry postgresql://user@host:port/db`` opens it (`open_registry`); tables, meaning
# and guarantees are those of the SQLite registry above:
# every write is one transaction that first bumps the change counter in `meta`, whose row
# lock queues concurrent writers (on any machine) and orders generations by commit, and reads
# run in one REPEATABLE READ snapshot. Vectors are stored as `bytea` (float32, little-endian)
# and searched by the recogniser's in-memory index (`index`), which asks for the counter
# on each request (one indexed row) and fetches only the speakers written since: an enrolment
# through one server is seen by identify on another at its next request.
#
# Needs psycopg 3 (``pip install "psycopg[binary]"``).

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    centroid BYTEA NOT NULL,
    n_utterances INTEGER NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    gen BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS embeddings (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    speaker_id BIGINT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    vector BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    source TEXT
);
CREATE INDEX IF NOT EXISTS embeddings_speaker ON embeddings(speaker_id);
CREATE TABLE IF NOT EXISTS removed (name TEXT PRIMARY KEY, gen BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS speakers_gen ON speakers(gen);
CREATE INDEX IF NOT EXISTS embeddings_source ON embeddings(source) WHERE source IS NOT NULL
"""
_PG_REQUIRED = {
    **_REQUIRED_COLUMNS,
    "speakers": _REQUIRED_COLUMNS["speakers"] | {"gen"},
    "embeddings": _REQUIRED_COLUMNS["embeddings"] | {"source"},
    "removed": {"name", "gen"},
}


def redact(url: str) -> str:
    """`url` without its password, for messages and logs.

    >>> redact("postgresql://ann:secret@db.example:5432/voices")
    'postgresql://ann@db.example:5432/voices'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresRegistry(BaseRegistry):
    """Enrolled speakers of one model in a PostgreSQL database.

    Arguments:
        url: a libpq URL, ``postgresql://user[:password]@host[:port]/dbname[?options]``
            (a schema other than ``public``: ``?options=-csearch_path%3Dvoxid``).
        model_fingerprint, create: as `voxid.inference.registry.Registry`; `create=False` refuses a
            database without the voxid tables ("no such registry") and creates nothing.
        timeout: seconds to connect, and to wait for another writer's lock.
    """

    _INT = "BIGINT"

    def __init__(
        self,
        url: str,
        model_fingerprint: str | None,
        *,
        timeout: float = 30.0,
        create: bool = True,
        chunk_policy: str | None = None,
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency of voxid
            raise RegistryError(
                f"{redact(url)}: PostgreSQL needs psycopg 3 (pip install 'psycopg[binary]')"
            ) from None
        self.url = url
        self.label = self.path = redact(url)
        self.model_fingerprint = model_fingerprint
        self.chunk_policy = chunk_policy
        self.timeout = timeout
        self.create = create
        self._local = threading.local()
        self._connect()
        self._check_fingerprint()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> Any:
        # One connection per thread and process, as with SQLite: a libpq connection must
        # not be shared across fork(), and one per thread keeps transactions apart.
        import psycopg

        key = os.getpid()
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == key and not con.closed:
            return con
        try:
            con = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.timeout)),
                application_name="voxid",
            )
        except psycopg.Error as exc:
            raise RegistryUnavailable(
                f"{self.label}: cannot connect ({_first_line(exc)})"
            ) from None
        try:
            con.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
            version = self._verify_tables(con)
            if not version and not self.create:
                raise NoSuchRegistry(f"{self.label}: no such registry (no voxid tables)")
            if version < SCHEMA_VERSION:
                self._init_schema(con)
        except psycopg.Error as exc:
            con.close()
            raise RegistryError(f"{self.label}: cannot open ({_first_line(exc)})") from None
        except BaseException:
            con.close()
            raise
        self._local.con, self._local.pid = con, key
        return con

    def _verify_tables(self, con: Any) -> int:
        """The schema version, 0 without tables; RegistryError for another program's."""
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        ).fetchall()
        tables: dict[str, set[str]] = {}
        for table, column in rows:
            tables.setdefault(table, set()).add(column)
        if not set(tables) & set(_PG_REQUIRED):
            return 0  # a database of other tables may hold a registry beside them
        return self._schema_version(con, tables, _PG_REQUIRED)

    def _init_schema(self, con: Any) -> None:
        con.execute("BEGIN")
        try:
            # Several servers starting at once: one creates the tables, the others wait
            # for it and find them whole.
            con.execute("SELECT pg_advisory_xact_lock(hashtext('voxid registry schema'))")
            if self._verify_tables(con) == 0:
                for statement in _PG_SCHEMA.split(";"):
                    con.execute(statement)
                con.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s), "
                    "('generation', '1'), ('instance', %s)",
                    (str(SCHEMA_VERSION), uuid.uuid4().hex),
                )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Any]:
        import psycopg

        con = self._connect()
        try:
            con.execute(begin)
        except psycopg.Error as exc:
            raise RegistryError(f"{self.label}: {_first_line(exc)}") from None
        try:
            yield con
        except psycopg.Error as exc:
            con.execute("ROLLBACK")
            raise RegistryError(f"{self.label}: {_first_line(exc)}") from None
        except BaseException:
            if not con.closed:
                con.execute("ROLLBACK")
            raise
        try:
            con.execute("COMMIT")
        except psycopg.Error as exc:
            raise RegistryError(f"{self.label}: cannot commit ({_first_line(exc)})") from None

    @contextmanager
    def _write(self) -> Iterator[Any]:
        # READ COMMITTED is enough: every writer first locks the counter row (`_bump`), so
        # each one starts after the previous committed and sees all it wrote.
        with self._transaction("BEGIN") as con:
            yield con

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as con:
            yield con

    def _bulk_insert(self, con: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        # COPY: one stream instead of a statement per row (1M speakers in seconds).
        with con.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def generation(self) -> tuple[str, int]:
        """`(instance, generation)` in one statement (one round trip, one indexed row)."""
        import psycopg

        try:
            return self._read_generation(self._connect())
        except psycopg.Error as exc:
            raise RegistryError(f"{self.label}: {_first_line(exc)}") from None

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
