"""An LDA projection of embeddings, fitted on the training speakers after training.

Cosine scoring of raw embeddings weighs every direction alike, including those along which
one speaker's utterances vary most (session, channel, words). Linear discriminant analysis
on the training speakers' embeddings keeps the directions that separate speakers and
whitens the within-speaker scatter, as the LDA step of Kaldi's x-vector recipe and the
linear back-ends of WeSpeaker and 3D-Speaker do. The projection is a fixed matrix applied
after the encoder, so a model with one stays a model: checkpoints, ONNX exports, the
registry and the server all see the projected embedding (`SpeakerModel.embed`).

The projection can also carry a cohort: the training speakers' mean embeddings in the
projected space, against which `voxid.inference.recognizer.Recognizer` normalises its scores
(AS-norm), as the evaluation does with `--cohort`.

Fitting uses scikit-learn; applying it is a torch module with fixed buffers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxid.errors import DataError

__all__ = ["LdaProjection", "adapt_lda", "fit_lda"]


class LdaProjection(nn.Module):
    """``(B, D)`` L2-normalised embeddings -> ``(B, K)``: centre, project, L2-normalise.

    >>> p = LdaProjection(4, 2)
    >>> p(F.normalize(torch.ones(3, 4), dim=1)).shape
    torch.Size([3, 2])
    """

    # Buffers, declared for the type checker (register_buffer makes them attributes).
    mean: torch.Tensor
    weight: torch.Tensor
    cohort: torch.Tensor | None

    def __init__(self, in_dim: int, out_dim: int, cohort_size: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("weight", torch.eye(in_dim, out_dim))
        # Unit rows (speakers' mean projected embeddings); None (not in the state dict)
        # when there is none.
        self.register_buffer("cohort", torch.zeros(cohort_size, out_dim) if cohort_size else None)

    @property
    def out_dim(self) -> int:
        """K, the size of the projected embedding."""
        return int(self.weight.shape[1])

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize((emb - self.mean) @ self.weight, dim=1)


def fit_lda(
    embeddings: np.ndarray, labels: np.ndarray, dim: int | None = None, cohort: bool = False
) -> LdaProjection:
    """Fit an `LdaProjection` on L2-normalised embeddings ``(N, D)`` of known speakers.

    `dim` is K, at most ``min(D, speakers - 1)`` (that many directions separate the
    speakers), which is also the default. Ledoit-Wolf shrinkage of the within-speaker
    covariance keeps the fit stable with few utterances per speaker; the projection then
    makes the within-speaker scatter the identity (within-class covariance normalisation).
    With `cohort`, each speaker's normalised mean projected embedding is kept as well.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    speakers, counts = np.unique(y, return_counts=True)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"LDA: need (N, D) embeddings and N labels, got {x.shape} and {y.shape}")
    if len(speakers) < 3 or int((counts >= 2).sum()) < 2:
        raise DataError(
            f"LDA: needs at least 3 speakers, 2 of them with 2 or more utterances; got "
            f"{len(speakers)} speakers and {len(x)} utterances"
        )
    most = min(x.shape[1], len(speakers) - 1)
    k = most if dim is None else int(dim)
    if not 1 <= k <= most:
        raise DataError(f"LDA: dim must be in 1..{most} (embedding size, speakers - 1), got {dim}")
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(x, y)
    proj = LdaProjection(x.shape[1], k, len(speakers) if cohort else 0)
    # The eigen solver projects without centring; cosine scoring needs the centre removed.
    proj.mean.copy_(torch.from_numpy(x.mean(axis=0)).float())
    proj.weight.copy_(torch.from_numpy(lda.scalings_[:, :k].copy()).float())
    if cohort:
        with torch.no_grad():
            z = proj(torch.from_numpy(x).float())
        inverse = np.unique(y, return_inverse=True)[1]
        sums = torch.zeros(len(speakers), k).index_add_(0, torch.from_numpy(inverse), z)
        assert proj.cohort is not None  # cohort_size > 0 above
        proj.cohort.copy_(F.normalize(sums, dim=1))
    return proj


def adapt_lda(
    projection: LdaProjection, embeddings: np.ndarray, labels: np.ndarray, weight: float = 0.2
) -> LdaProjection:
    """`projection` bent towards a new domain: ``embeddings (N, K)``, its own unit outputs
    for labelled recordings of that domain, give their within-speaker covariance S
    (scaled to a mean variance of 1, as the LDA leaves its training speakers'); the
    adapted projection whitens ``weight * S + (1 - weight) * I`` on top, and the domain's
    speakers' means join the cohort when there is one. Unit-length outputs make it one
    linear map: the result is an `LdaProjection` of the same size.

    >>> p = LdaProjection(3, 3)
    >>> x = np.array([[1.0, 0.1, 0], [1.0, -0.1, 0], [0, 0.1, 1], [0, -0.1, 1]])
    >>> a = adapt_lda(p, x / np.linalg.norm(x, axis=1, keepdims=True), np.array([0, 0, 1, 1]), 0.5)
    >>> [round(float(v), 2) for v in a.weight.diagonal()]  # damped: the axis speakers vary on
    [1.41, 0.71, 1.41]
    """
    if not 0.0 <= float(weight) <= 1.0:
        raise DataError(f"LDA adapt: weight must be in 0..1, got {weight}")
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    speakers, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] != projection.out_dim:
        raise DataError(
            f"LDA adapt: need (N, {projection.out_dim}) embeddings and N labels, got "
            f"{x.shape} and {y.shape}"
        )
    if len(speakers) < 2 or int((counts >= 2).sum()) < 2:
        raise DataError(
            f"LDA adapt: needs 2 or more speakers with 2 or more recordings each; got "
            f"{len(speakers)} speakers and {len(x)} recordings"
        )
    means = np.zeros((len(speakers), x.shape[1]))
    np.add.at(means, inverse, x)
    means /= counts[:, None]
    within = x - means[inverse]
    scatter = within.T @ within / len(x)
    scatter *= scatter.shape[0] / max(float(np.trace(scatter)), 1e-12)
    blend = weight * scatter + (1.0 - weight) * np.eye(len(scatter))
    values, vectors = np.linalg.eigh(blend)
    whiten = vectors @ np.diag(np.maximum(values, 1e-6) ** -0.5) @ vectors.T
    old = projection.cohort
    size = 0 if old is None else int(old.shape[0]) + len(speakers)
    adapted = LdaProjection(int(projection.mean.shape[0]), projection.out_dim, size)
    w = torch.from_numpy(whiten).float()
    adapted.mean.copy_(projection.mean)
    # (x - m) W is normalised after the old projection and again after the whitening; a
    # direction is all that survives, so the two maps compose into one.
    adapted.weight.copy_(projection.weight @ w)
    if old is not None and adapted.cohort is not None:
        domain = torch.from_numpy(means).float()
        adapted.cohort.copy_(F.normalize(torch.cat([old, domain]) @ w, dim=1))
    return adapted
