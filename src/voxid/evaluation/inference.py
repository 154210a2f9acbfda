"""Run a model (torch `SpeakerModel` or `GmmClassifier`) over the items of a store.

One deterministic pass gives the class scores, probabilities and embeddings of every item
and is timed after a warm-up batch; optional Monte-Carlo dropout passes give K samples of
the class probabilities for the uncertainty report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxid.errors import ConfigError, DataError, ModelError, require_positive
from voxid.numeric import softmax


@dataclass
class Outputs:
    """What a model said about N items.

    Arguments
    ---------
    scores : (N, C) logits (torch models) or mean frame log-likelihoods (GMM).
    probs : (N, C) softmax of `scores`.
    embeddings : (N, D) embeddings (L2-normalised for embedding models), None for GMMs.
    mc_probs : (K, N, C) probabilities of K MC-dropout passes, or None.
    elapsed : wall seconds of the timed deterministic pass (after warm-up).
    timed_items, timed_audio_seconds : how many items / seconds of audio that pass covered.
    """

    scores: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None
    mc_probs: np.ndarray | None
    elapsed: float
    timed_items: int
    timed_audio_seconds: float

    def speed(self) -> dict[str, float | int]:
        """Samples per second and x real time of the timed pass."""
        t = max(self.elapsed, 1e-9)
        return {
            "items_timed": self.timed_items,
            "seconds": round(self.elapsed, 4),
            "samples_per_second": self.timed_items / t,
            "x_real_time": self.timed_audio_seconds / t,
        }


def _batches(dataset: Any, batch_size: int, feature_kind: str):
    from voxid.data.loader import collate_pad

    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x, lengths, _ = collate_pad(batch)
        # Only frame sequences have a meaningful length; images and waveforms do not.
        yield x, (None if feature_kind == "image" else lengths)


def _forward(model: Any, x: Any, lengths: Any, store_kind: str) -> tuple[Any, Any]:
    if store_kind == "waveform":
        samples = lengths
        x = model.frontend(x)
        lengths = _frame_lengths(model.feature_config, samples, x)
    emb = model.encoder(x, lengths)
    return model.head(emb, None), model.finish_embedding(emb)


def _frame_lengths(feature_config: Any, samples: Any, feats: Any) -> Any:
    """Valid frames per item of a padded waveform batch (None for images)."""
    import torch

    from voxid.features import frames_for

    if samples is None or feats.dim() != 3:
        return None
    n = [min(frames_for(feature_config, int(s)), feats.shape[1]) for s in samples.tolist()]
    return torch.tensor(n)


def check_store_fits(model: Any, info: Any) -> str:
    """Raise `DataError` unless the store's features are what the model expects.

    Returns the store's feature kind (``"waveform"`` stores go through the model's frontend).
    """
    kind = info.feature_config.kind
    if kind != "waveform":
        info.check_compatible(model.feature_config)
    return kind


def run_torch(
    model: Any, dataset: Any, *, batch_size: int = 64, mc_samples: int = 0, seed: int = 0
) -> Outputs:
    """Scores, probabilities and embeddings of every item of `dataset` (a `StoreDataset`).

    The first batch is run once untimed (allocator and kernel warm-up); the timing then
    covers the complete deterministic pass. `mc_samples` > 0 adds that many passes with
    dropout active (`model.set_mc_dropout(True)`), seeded for repeatability.
    """
    import torch

    require_positive("batch_size", batch_size, integer=True)
    if mc_samples < 0:
        raise ConfigError(f"mc_samples: must be >= 0, got {mc_samples}")
    if len(dataset) == 0:
        raise DataError(f"{dataset.path}: no items to evaluate")
    kind = check_store_fits(model, dataset.info)
    model.eval()
    batches = list(_batches(dataset, batch_size, kind))
    with torch.inference_mode():
        first_x, first_n = batches[0]
        _forward(model, first_x, first_n, kind)
        start = time.perf_counter()
        outs = [_forward(model, x, n, kind) for x, n in batches]
        elapsed = time.perf_counter() - start
        scores = torch.cat([o[0] for o in outs]).double().numpy()
        embeddings = torch.cat([o[1] for o in outs]).double().numpy()
    mc_probs = _mc_passes(model, batches, kind, mc_samples, seed) if mc_samples else None
    return Outputs(
        scores=scores,
        probs=softmax(scores),
        embeddings=embeddings,
        mc_probs=mc_probs,
        elapsed=elapsed,
        timed_items=len(dataset),
        timed_audio_seconds=float(np.sum(dataset.items["seconds"])),
    )


def _mc_passes(model: Any, batches: list, kind: str, k: int, seed: int) -> np.ndarray:
    """(K, N, C) class probabilities from K passes with dropout sampling."""
    import torch

    if not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in model.modules()):
        raise ModelError(f"{model.name}: has no dropout layers; MC dropout needs them")
    passes = []
    # A private RNG stream: repeatable masks without disturbing the caller's seed.
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(seed)
        model.set_mc_dropout(True)
        try:
            for _ in range(k):
                probs = [torch.softmax(_forward(model, x, n, kind)[0], 1) for x, n in batches]
                passes.append(torch.cat(probs).double().numpy())
        finally:
            model.set_mc_dropout(False)
    return np.stack(passes)


def run_gmm(clf: Any, dataset: Any, feature_config: dict[str, Any]) -> Outputs:
    """Mean frame log-likelihoods of every item under each speaker's GMM (timed, warmed up).

    `feature_config` is the run's (``card.feature_dict``): a waveform store is
    turned into those features first, any other store must hold exactly them.
    """
    if len(dataset) == 0:
        raise DataError(f"{dataset.path}: no items to evaluate")
    feats = [dataset[i][0] for i in range(len(dataset))]
    if dataset.info.feature_config.kind == "waveform":
        import torch

        from voxid.features import FeatureConfig, build_frontend

        frontend = build_frontend(FeatureConfig.from_dict(feature_config)).eval()
        with torch.inference_mode():
            feats = [frontend(x[None])[0] for x in feats]
    else:
        dataset.info.check_compatible(feature_config)
    feats = [x.numpy() for x in feats]
    clf.predict_scores(feats[:1])
    start = time.perf_counter()
    scores = clf.predict_scores(feats)
    elapsed = time.perf_counter() - start
    return Outputs(
        scores=scores,
        probs=softmax(scores),
        embeddings=None,
        mc_probs=None,
        elapsed=elapsed,
        timed_items=len(feats),
        timed_audio_seconds=float(np.sum(dataset.items["seconds"])),
    )
