"""`voxid calibrate` on small splits: every utterance tested, honest counts and intervals,
and no threshold saved that the trials cannot support (#15 item 13)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from test_recognizer import make_model
from voxid.calibration import calibrate, cosine_trials
from voxid.cli import app
from voxid.errors import DataError


@pytest.fixture(scope="module")
def uneven_store(speech_corpus, tmp_path_factory):
    """A log-mel store whose val split holds 4 files of alice and bruno and 1 of chloe and
    david (the rest is train): only two speakers can be enrolled with 3 utterances."""
    from voxid.data import load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    corpus = load_corpus(speech_corpus)
    wanted = {"alice": 4, "bruno": 4, "chloe": 1, "david": 1}
    seen: dict[str, int] = {}
    items = []
    for it in corpus:
        seen[it.speaker] = seen.get(it.speaker, 0) + 1
        split = "val" if seen[it.speaker] <= wanted[it.speaker] else "train"
        items.append(type(it)(it.path, it.speaker, split, it.extra))
    out = tmp_path_factory.mktemp("cal") / "store.h5"
    prepare(corpus.with_items(items), out, PrepareConfig(), workers=1)
    return out


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("cal_model") / "model.pt")


def test_every_utterance_is_tested_against_enrolments_without_it():
    """Leave-one-out: each utterance is a probe, scored against enrolments of its speaker
    that leave it out and against every enrolment of the others."""
    labels = np.array([0, 0, 1, 1, 2, 2])
    embs = np.eye(3, dtype=np.float32)[labels]
    tar, non, rows = cosine_trials(embs, labels, n_enroll=1)
    # 6 probes x 1 own enrolment; 6 probes x 2 other speakers x 2 enrolments each.
    assert (tar.size, non.size) == (6, 24)
    assert sorted(set(rows[: tar.size].tolist())) == list(range(6))  # every utterance tested
    assert tar.tolist() == [1.0] * 6 and non.tolist() == [0.0] * 24


def test_speakers_without_enough_utterances_are_still_probes():
    """chloe (1 file) cannot be enrolled with 2, but her file is a non-target probe."""
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    embs = np.eye(3, dtype=np.float32)[labels]
    tar, non, rows = cosine_trials(embs, labels, n_enroll=2)
    assert tar.size == 6 * 1  # each of 6 probes against the one enrolment of the other two
    assert 6 in rows[tar.size :]  # the lone utterance is tested
    assert non.size == 3 * 3 + 3 * 3 + 1 * 6


def test_error_interval_is_clopper_pearson():
    """Exact two-sided 95 % bounds: 0 of n errors gives an upper bound of about 3.7 / n
    (the one-sided bound is the rule of three, 3 / n)."""
    from voxid.metrics import error_interval

    lo, hi = error_interval(0, 300)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 300))
    assert 3 / 300 < hi < 4 / 300
    lo, hi = error_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1871, 0.8129)
    assert error_interval(0, 0) == (0.0, 1.0)


def test_report_counts_the_speakers_that_took_part(small_model, uneven_store, tmp_path):
    rep = calibrate(small_model, uneven_store, far=0.25, save=False)
    assert rep.n_enroll == 3 and rep.n_utterances == 10
    assert rep.n_target_speakers == 2  # only alice and bruno have 3 files besides a probe
    assert rep.n_speakers == 4  # chloe and david are non-target probes
    assert (rep.n_target, rep.n_nontarget) == (8, 48)
    for (lo, hi), rate in ((rep.far_ci, rep.far), (rep.frr_ci, rep.frr)):
        assert 0 <= lo <= rate <= hi <= 1


def test_cli_refuses_to_save_a_far_the_trials_cannot_support(small_model, uneven_store, tmp_path):
    copy = tmp_path / "model.pt"
    shutil.copy(small_model, copy)
    before = copy.read_bytes()
    args = ["calibrate", str(copy), "--data", str(uneven_store), "--far", "0.01"]
    with pytest.raises(DataError) as err:
        CliRunner().invoke(app, args, catch_exceptions=False)
    message = str(err.value)
    assert "48 non-target trials" in message and "at least 300" in message
    assert "--force" in message and "\n" not in message
    assert copy.read_bytes() == before  # nothing saved

    out = tmp_path / "copy.pt"
    with pytest.raises(DataError):
        CliRunner().invoke(app, [*args, "--out", str(out)], catch_exceptions=False)
    assert not out.exists()  # no uncalibrated copy left behind

    result = CliRunner().invoke(app, [*args, "--force"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "not supported" in result.output and "CI" in result.output
    assert copy.read_bytes() != before

    result = CliRunner().invoke(app, [*args[:-1], "0.25", "--json"], catch_exceptions=False)
    rep = json.loads(result.output)
    assert rep["supported"] and rep["n_nontarget"] == 48 and rep["needed_nontarget"] == 12
    assert rep["n_target_speakers"] == 2 and len(rep["heldout_far_ci"]) == 2


def test_cli_line_names_counts_and_intervals(small_model, uneven_store, tmp_path):
    copy = tmp_path / "model.pt"
    shutil.copy(small_model, copy)
    args = ["calibrate", str(copy), "--data", str(uneven_store), "--far", "0.25"]
    out = CliRunner().invoke(app, args, catch_exceptions=False).output
    flat = " ".join(out.split())
    assert "8 target trials (2 speakers)" in flat and "48 non-target trials (4 speakers)" in flat
    assert "95% CI" in flat and "leave-one-out" in flat
