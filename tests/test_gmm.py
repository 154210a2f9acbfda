"""The GMM baseline: separates classes, scores like scikit-learn, saves without pickle."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from voxid.errors import ConfigError, DataError, ModelError
from voxid.models.gmm import GmmClassifier, _log_likelihood


def make_data(seed: int = 0, n_per: int = 6, dim: int = 6):
    """Three 'speakers', each a two-mode Gaussian mixture with its own centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(3, 2, dim))
    feats, labels = [], []
    for spk, names in enumerate(("ann", "bob", "cid")):
        for _ in range(n_per):
            modes = rng.integers(0, 2, size=50)
            feats.append(centres[spk, modes] + rng.normal(0, 1, size=(50, dim)))
            labels.append(names)
    return feats, labels


def test_separates_distinct_classes():
    train_x, train_y = make_data(seed=0)
    test_x, test_y = make_data(seed=0, n_per=3)  # same centres, fresh frames
    rng = np.random.default_rng(1)
    test_x = [x + rng.normal(0, 0.3, x.shape) for x in test_x]
    clf = GmmClassifier(n_components=4, seed=0, ubm=True, n_jobs=2).fit(train_x, train_y)
    assert clf.labels_.tolist() == ["ann", "bob", "cid"]
    assert (clf.predict(test_x) == np.array(test_y)).all()
    for normalize in ("ubm", "others"):
        scores = clf.predict_scores(test_x, normalize=normalize)
        target = scores[np.arange(len(test_y)), [clf.labels_.tolist().index(y) for y in test_y]]
        assert (target > 0).all()
        assert (scores.argmax(1) == clf.predict_scores(test_x).argmax(1)).all()


def test_scores_match_scikit_learn():
    x = np.random.default_rng(0).normal(size=(300, 5))
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    params = {
        "weights": gmm.weights_[None],
        "means": gmm.means_[None],
        "covariances": gmm.covariances_[None],
        "precisions_cholesky": gmm.precisions_cholesky_[None],
    }
    np.testing.assert_allclose(_log_likelihood(x, params)[:, 0], gmm.score_samples(x), rtol=1e-10)


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    x, y = make_data(seed=2, n_per=3)
    clf = GmmClassifier(n_components=3, max_iter=50, seed=3, ubm=True).fit(x, y)
    path = clf.save(tmp_path / "gmm.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickled objects
        assert {"weights", "means", "covariances", "precisions_cholesky", "labels"} <= set(data)
    loaded = GmmClassifier.load(path)
    assert loaded.n_components == 3 and loaded.seed == 3 and loaded.ubm
    for normalize in (None, "ubm", "others"):
        np.testing.assert_array_equal(
            loaded.predict_scores(x, normalize), clf.predict_scores(x, normalize)
        )
    assert loaded.predict(x).tolist() == clf.predict(x).tolist()


def test_few_frames_fit_fewer_components():
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(40, 3)), rng.normal(5, 1, size=(3, 3))]
    clf = GmmClassifier(n_components=8).fit(feats, [0, 1])
    assert clf.predict(feats).tolist() == [0, 1]
    assert np.isfinite(clf.predict_scores(feats)).all()


def test_errors_name_the_cause(tmp_path):
    with pytest.raises(ConfigError, match="n_components"):
        GmmClassifier(n_components=0)
    clf = GmmClassifier(n_components=2)
    with pytest.raises(ModelError, match="not fitted"):
        clf.predict_scores([np.zeros((5, 3))])
    with pytest.raises(DataError, match="features\\[1\\]"):
        clf.fit([np.ones((5, 3)), np.ones((0, 3))], [0, 1])
    clf.fit([np.random.default_rng(0).normal(size=(20, 3))] * 2, ["a", "b"])
    with pytest.raises(DataError, match="expected \\(T, 3\\)"):
        clf.predict_scores([np.zeros((5, 4))])
    with pytest.raises(ConfigError, match="normalize='ubm'"):
        clf.predict_scores([np.zeros((5, 3))], normalize="ubm")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"bad\.npz"):
        GmmClassifier.load(bad)
