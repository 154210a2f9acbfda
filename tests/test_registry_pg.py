"""What only the PostgreSQL registry has: URLs, connection errors, other programs' tables
in the same database, and several recognisers (servers) sharing one registry."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from voxid.errors import RegistryError, RegistryUnavailable
from voxid.inference.index import SpeakerIndex
from voxid.inference.registry import Enrolment, PostgresRegistry, open_registry, redact

DIM = 16


def _vectors(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_url_picks_postgres_and_messages_hide_the_password(pg_url):
    reg = open_registry(pg_url, "fp-a")
    assert isinstance(reg, PostgresRegistry)
    assert redact("postgresql://u:pw@h:1/d") == "postgresql://u@h:1/d"
    with pytest.raises(RegistryUnavailable) as err:  # the service answers 503
        open_registry("postgresql://someone:hunter2@127.0.0.1:1/nodb", "fp-a", timeout=2)
    message = str(err.value)
    assert message.startswith("postgresql://someone@127.0.0.1:1/nodb: cannot connect (")
    assert "hunter2" not in message and "\n" not in message


def test_must_exist_and_foreign_tables(pg_url):
    with pytest.raises(RegistryError, match="no such registry"):
        open_registry(pg_url, "fp-a", create=False)
    with psycopg.connect(pg_url, autocommit=True) as con:
        tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone()[0]
        assert tables == 0  # create=False created nothing
        con.execute("CREATE TABLE orders (id INTEGER)")  # another program's table is fine
    open_registry(pg_url, "fp-a").add("alice", _vectors(0))
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ALTER TABLE speakers DROP COLUMN gen")
    with pytest.raises(RegistryError, match=r"not a voxid registry \(table speakers has no gen"):
        open_registry(pg_url, "fp-a")


def test_a_crm_speakers_table_is_refused(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE speakers (id INTEGER PRIMARY KEY, who TEXT)")
    for create in (True, False):
        with pytest.raises(RegistryError, match=r"not a voxid registry \(no meta table"):
            open_registry(pg_url, "fp-a", create=create)


def test_two_servers_share_one_registry(pg_url):
    """An enrolment through one process's registry and index is seen by another's index at
    its next sync, including removals; nothing is re-read when nothing changed."""
    one, two = open_registry(pg_url, "fp-a"), open_registry(pg_url, "fp-a")
    idx_one, idx_two = SpeakerIndex(), SpeakerIndex()
    one.add_many([Enrolment(f"s{i}", _vectors(i)) for i in range(20)])
    assert idx_two.sync(two) and len(idx_two) == 20
    assert not idx_two.sync(two)  # unchanged: only the counter was read
    one.add("new", _vectors(100))
    one.remove("s3")
    assert idx_two.sync(two)
    assert "new" in idx_two and "s3" not in idx_two and len(idx_two) == 20
    query = _vectors(100, 1)
    assert idx_two.top(query / np.linalg.norm(query), 1)[0][0] == "new"
    idx_one.sync(one)
    assert idx_one.names() == idx_two.names()
