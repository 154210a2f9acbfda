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

__all__ = ["LdaProjection", "fit_lda"]


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
