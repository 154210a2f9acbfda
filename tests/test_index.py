"""The in-memory speaker index: the same ranking and scores as a full sort over every
enrolled speaker (cosine and AS-norm, one or several query samples), incremental updates,
the approximate path's recall, and a recogniser that reads nothing when nothing changed."""

from __future__ import annotations

import numpy as np
import pytest

from voxid.inference.index import SpeakerIndex
from voxid.inference.registry import Registry, normalize_rows
from voxid.inference.scoring import as_norm

DIM = 32


def _clustered(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """n speaker centroids in loose groups (as real voices are), and per speaker a query
    about as close to it as another utterance of the same voice is (cosine ~0.7)."""
    rng = np.random.default_rng(seed)
    groups = normalize_rows(rng.standard_normal((max(4, n // 50), DIM)))
    spread = 2.4 / np.sqrt(DIM) * rng.standard_normal((n, DIM))
    cents = normalize_rows(groups[rng.integers(0, len(groups), n)] + spread)
    queries = normalize_rows(cents + 0.9 * normalize_rows(rng.standard_normal((n, DIM))))
    return [f"spk{i:05d}" for i in range(n)], cents, queries


def _full_sort(names, cents, samples, cohort, k):
    """Identification before the index: every centroid scored, a stable argsort over the
    speakers sorted by name."""
    order = np.argsort(names, kind="stable")
    names = [names[i] for i in order]
    refs = cents[order]
    raw = samples @ refs.T
    scores = raw if cohort is None else as_norm(raw, samples, refs, cohort)
    mean = scores.mean(axis=0)
    top = np.argsort(-mean, kind="stable")[:k]
    return [(names[i], float(mean[i])) for i in top]


@pytest.mark.parametrize("with_cohort", [False, True])
@pytest.mark.parametrize("n_samples", [1, 3])
def test_exact_index_ranks_as_a_full_sort(with_cohort, n_samples):
    names, cents, queries = _clustered(600)
    cohort = normalize_rows(np.random.default_rng(5).standard_normal((150, DIM)))
    cohort = cohort if with_cohort else None
    idx = SpeakerIndex(cohort)
    perm = np.random.default_rng(1).permutation(len(names))  # insertion order is not name order
    idx.upsert([names[i] for i in perm], cents[perm])
    rng = np.random.default_rng(2)
    for q in range(40):
        samples = normalize_rows(queries[q] + 0.1 * rng.standard_normal((n_samples, DIM)))
        want = _full_sort(names, cents, samples, cohort, 5)
        got = idx.top(samples, 5)[:5]
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)
    # Ties: two speakers with the same centroid come out by name, as the stable sort did.
    twin = SpeakerIndex()
    twin.upsert(["b", "a", "c"], np.stack([cents[0], cents[0], cents[1]]))
    assert [t[0] for t in twin.top(cents[:1], 1)] == ["a", "b"]  # the tie is kept whole


def test_updates_and_removals_match_a_fresh_index():
    names, cents, queries = _clustered(300, seed=3)
    live = SpeakerIndex()
    live.upsert(names[:200], cents[:200])
    live.remove(names[:50])
    live.upsert(names[200:], cents[200:])  # reuses the freed slots
    live.upsert(names[60:70], cents[:10])  # new centroids for known names
    final = dict(zip(names[50:], cents[50:], strict=True))
    final.update(zip(names[60:70], cents[:10], strict=True))
    fresh = SpeakerIndex()
    fresh.upsert(list(final), np.stack(list(final.values())))
    assert len(live) == len(fresh) == 250 and live.names() == fresh.names()
    for q in queries[:30]:
        assert live.top(q[None], 3) == fresh.top(q[None], 3)
    assert live.get(names[0]) is None
    np.testing.assert_array_equal(live.get(names[65]), cents[5])


def test_approximate_index_recall_against_exact():
    pytest.importorskip("faiss")
    names, cents, queries = _clustered(4000, seed=4)
    cohort = normalize_rows(np.random.default_rng(5).standard_normal((150, DIM)))
    exact = SpeakerIndex(cohort)
    approx = SpeakerIndex(cohort, exact_limit=1000)
    for part in range(0, 4000, 1000):  # built on the way up, then updated in place
        exact.upsert(names[part : part + 1000], cents[part : part + 1000])
        approx.upsert(names[part : part + 1000], cents[part : part + 1000])
    assert approx.approximate and not exact.approximate
    hits = 0
    for q in queries[:300]:
        want, got = exact.top(q[None], 1)[0], approx.top(q[None], 1)[0]
        hits += want[0] == got[0]
        if want[0] == got[0]:
            assert abs(want[1] - got[1]) < 1e-6  # the approximate path reports exact scores
    assert hits / 300 >= 0.98
    approx.remove(names[:10])
    assert all(approx.top(q[None], 1)[0][0] not in names[:10] for q in queries[:10])


def test_recognizer_reads_nothing_when_nothing_changed(tmp_path, speech_corpus):
    """identify with the shipped model (AS-norm cohort) ranks as the full sort over the
    registry's centroids did, and a second identify runs no table read."""
    from voxid.inference.recognizer import Recognizer

    rec = Recognizer.load("base", registry=tmp_path / "s.db")
    voices = sorted(p.name for p in speech_corpus.iterdir() if p.is_dir())
    files = {v: sorted((speech_corpus / v).glob("*.wav")) for v in voices}
    for v in voices:
        rec.enroll(v, files[v][:2])
    query = files[voices[1]][5]
    first = rec.identify(query, top_k=3)
    names, cents = rec.registry.centroids()
    samples = rec._samples(str(query), None)
    want = _full_sort(names, cents, samples, rec.backend.cohort, 3)
    assert [(c.name, round(c.score, 5)) for c in first.candidates] == [
        (n, round(s, 5)) for n, s in want
    ]
    reg: Registry = rec.registry
    statements: list[str] = []
    reg._connect().set_trace_callback(statements.append)
    again = rec.identify(query, top_k=3)
    assert again.candidates == first.candidates
    assert statements == ["PRAGMA data_version"]
    Registry(tmp_path / "s.db", rec.model_fingerprint).remove(voices[1])  # another writer
    assert rec.identify(query, top_k=3).name != voices[1]
    assert voices[1] not in [c.name for c in rec.identify(query, top_k=3).candidates]
