"""The classical baseline: one diagonal-covariance Gaussian mixture per speaker on MFCCs.

Each speaker's frames (20 MFCC + deltas + delta-deltas, mean-normalised: ``(T, 60)`` per
utterance) train a ``sklearn.mixture.GaussianMixture``; an utterance scores the average
per-frame log-likelihood under each speaker's mixture. For verification-like scores the
likelihood of a background model is subtracted: a universal background model (UBM) fitted
on everyone's frames, or the mean score of the other speakers.

Scoring is done here in numpy from the stored parameters (it matches scikit-learn's
``score_samples``), so a saved model is a plain ``.npz`` of arrays that loads without
pickle and without refitting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from voxid.errors import ConfigError, DataError, ModelError
from voxid.io import atomic_write_npz

_FIELDS = ("weights", "means", "covariances", "precisions_cholesky")


def _fit_one(
    frames: np.ndarray, n_components: int, max_iter: int, reg_covar: float, seed: int
) -> GaussianMixture:
    gmm = GaussianMixture(
        n_components=min(n_components, len(frames)),
        covariance_type="diag",
        max_iter=max_iter,
        reg_covar=reg_covar,
        random_state=seed,
    ).fit(frames)
    return gmm.weights_, gmm.means_, gmm.covariances_, gmm.precisions_cholesky_


def _pad(arrays: list[np.ndarray], k: int, fill: float) -> np.ndarray:
    # Speakers with fewer frames than components get fewer; pad to one (C, K, ...) array
    # with zero-weight components (weight 0 gives log-weight -inf, so they never count).
    out = np.full((len(arrays), k, *arrays[0].shape[1:]), fill, dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


class GmmClassifier:
    """Per-speaker diagonal GMMs on frame features.

    Arguments
    ---------
    n_components : mixture components per speaker.
    max_iter : EM iterations.
    seed : random state for the k-means initialisation.
    reg_covar : variance floor added by scikit-learn (keeps silent/constant dims finite).
    ubm : also fit a universal background model for ``normalize="ubm"``.
    n_jobs : parallel fits over speakers (joblib; -1 for all cores).

    >>> rng = np.random.default_rng(0)
    >>> feats = [rng.normal(c * 3, 1, (40, 4)) for c in (0, 1, 0, 1)]
    >>> clf = GmmClassifier(n_components=2, seed=0).fit(feats, ["a", "b", "a", "b"])
    >>> clf.predict_scores(feats).shape, clf.predict(feats).tolist()
    ((4, 2), ['a', 'b', 'a', 'b'])
    """

    def __init__(
        self,
        n_components: int = 32,
        max_iter: int = 100,
        seed: int = 0,
        reg_covar: float = 1e-3,
        ubm: bool = False,
        n_jobs: int = 1,
    ):
        for name, value in (("n_components", n_components), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be a positive integer")
        if not reg_covar > 0:
            raise ConfigError(f"reg_covar={reg_covar!r}: must be positive")
        self.n_components, self.max_iter, self.seed = n_components, max_iter, seed
        self.reg_covar, self.ubm, self.n_jobs = reg_covar, ubm, n_jobs
        self.labels_: np.ndarray | None = None
        self.params_: dict[str, np.ndarray] = {}
        self.ubm_params_: dict[str, np.ndarray] | None = None

    @property
    def n_classes(self) -> int:
        """Number of speakers fitted."""
        return 0 if self.labels_ is None else len(self.labels_)

    def fit(
        self, features: Sequence[np.ndarray], labels: Sequence[Any] | np.ndarray
    ) -> GmmClassifier:
        """Fit one mixture per label on the pooled frames of its utterances.

        Arguments
        ---------
        features : one ``(T, F)`` array per utterance.
        labels : one label (int or str) per utterance; classes are the sorted unique labels.
        """
        if len(features) != len(labels) or not len(features):
            raise DataError(f"gmm: {len(features)} feature arrays for {len(labels)} labels")
        arrays = [_frames(f, i) for i, f in enumerate(features)]
        label_array = np.asarray(labels)
        classes = np.unique(label_array)
        pooled = [
            np.concatenate([a for a, y in zip(arrays, label_array, strict=True) if y == c])
            for c in classes
        ]
        # Threads, not processes: the EM steps are BLAS calls that release the GIL, and
        # worker processes would cost more to start than a small fit takes.
        fits = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(_fit_one)(x, self.n_components, self.max_iter, self.reg_covar, self.seed)
            for x in pooled
        )
        k = max(len(w) for w, *_ in fits)
        self.params_ = {
            "weights": _pad([f[0] for f in fits], k, 0.0),
            "means": _pad([f[1] for f in fits], k, 0.0),
            "covariances": _pad([f[2] for f in fits], k, 1.0),
            "precisions_cholesky": _pad([f[3] for f in fits], k, 1.0),
        }
        self.labels_ = classes
        self.ubm_params_ = None
        if self.ubm:
            # An equal share of frames per speaker keeps talkative speakers from owning the UBM.
            rng = np.random.default_rng(self.seed)
            share = min(len(x) for x in pooled)
            frames = np.concatenate([x[rng.choice(len(x), share, replace=False)] for x in pooled])
            fit = _fit_one(frames, self.n_components, self.max_iter, self.reg_covar, self.seed)
            self.ubm_params_ = {name: a[None] for name, a in zip(_FIELDS, fit, strict=True)}
        return self

    def predict_scores(
        self, features: Sequence[np.ndarray], normalize: str | None = None
    ) -> np.ndarray:
        """Average per-frame log-likelihood ``(N, n_classes)``, columns in ``labels_`` order.

        ``normalize``: None (raw), ``"ubm"`` (minus the UBM's, needs ``ubm=True``) or
        ``"others"`` (minus the mean of the other speakers' scores).
        """
        if self.labels_ is None:
            raise ModelError("gmm: not fitted; call fit() or load() first")
        if normalize not in (None, "ubm", "others"):
            raise ConfigError(f"normalize={normalize!r}: must be None, 'ubm' or 'others'")
        ubm_params = self.ubm_params_
        if normalize == "ubm" and ubm_params is None:
            raise ConfigError("normalize='ubm': this model was fitted without ubm=True")
        dim = self.params_["means"].shape[-1]
        scores = np.empty((len(features), self.n_classes))
        for i, f in enumerate(features):
            x = _frames(f, i, dim)
            scores[i] = _log_likelihood(x, self.params_).mean(axis=0)
            if normalize == "ubm" and ubm_params is not None:
                scores[i] -= _log_likelihood(x, ubm_params).mean()
        if normalize == "others" and self.n_classes > 1:
            others = (scores.sum(axis=1, keepdims=True) - scores) / (self.n_classes - 1)
            scores = scores - others
        return scores

    def predict(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """The most likely label for each utterance ``(N,)``."""
        scores = self.predict_scores(features)  # raises ModelError when not fitted
        assert self.labels_ is not None
        labels: np.ndarray = self.labels_[scores.argmax(axis=1)]
        return labels

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as a plain ``.npz`` (atomically: temporary file, then rename)."""
        if self.labels_ is None:
            raise ModelError("gmm: not fitted; nothing to save")
        path = Path(path)
        arrays = dict(self.params_)
        arrays["labels"] = self.labels_
        arrays["config"] = np.array(
            [self.n_components, self.max_iter, self.seed, self.reg_covar, self.ubm, self.n_jobs],
            dtype=np.float64,
        )
        if self.ubm_params_ is not None:
            arrays.update({f"ubm_{k}": v for k, v in self.ubm_params_.items()})
        return atomic_write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GmmClassifier:
        """Read a model written by :meth:`save` (no pickle is ever loaded)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a voxid GMM file ({exc})") from None
        missing = [k for k in (*_FIELDS, "labels", "config") if k not in arrays]
        if missing:
            raise ModelError(f"{path}: not a voxid GMM file (missing {', '.join(missing)})")
        n_comp, max_iter, seed, reg, ubm, n_jobs = arrays["config"].tolist()
        clf = cls(int(n_comp), int(max_iter), int(seed), float(reg), bool(ubm), int(n_jobs))
        clf.params_ = {k: arrays[k] for k in _FIELDS}
        clf.labels_ = arrays["labels"]
        if "ubm_weights" in arrays:
            clf.ubm_params_ = {k: arrays[f"ubm_{k}"] for k in _FIELDS}
        return clf


def _frames(f: np.ndarray, index: int, dim: int | None = None) -> np.ndarray:
    x = np.asarray(f, dtype=np.float64)
    if x.ndim != 2 or not len(x) or (dim is not None and x.shape[1] != dim):
        want = f"(T, {dim})" if dim else "(T, F)"
        raise DataError(f"gmm: features[{index}] has shape {x.shape}, expected {want} with T > 0")
    if not np.isfinite(x).all():
        raise DataError(f"gmm: features[{index}] holds NaN or inf")
    return x


def _log_likelihood(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Per-frame log-likelihood ``(T, C)`` of ``x`` ``(T, D)`` under C diagonal GMMs."""
    means, prec_chol = params["means"], params["precisions_cholesky"]  # (C, K, D)
    n_cls, k, d = means.shape
    prec = (prec_chol**2).reshape(n_cls * k, d)
    mp = (means * prec_chol**2).reshape(n_cls * k, d)
    # The expanded square (x - mu)^2 / var = x^2/var - 2 x mu/var + mu^2/var as matrix
    # products scores every component of every speaker in one pass.
    maha = (x**2) @ prec.T - 2.0 * x @ mp.T + (means.reshape(n_cls * k, d) * mp).sum(1)
    log_det = np.log(prec_chol).sum(-1).reshape(-1)
    with np.errstate(divide="ignore"):
        log_w = np.log(params["weights"]).reshape(-1)
    log_prob = -0.5 * (d * np.log(2 * np.pi) + maha) + log_det + log_w
    scores: np.ndarray = logsumexp(log_prob.reshape(len(x), n_cls, k), axis=2)
    return scores
