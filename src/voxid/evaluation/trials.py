"""VoxCeleb-style trial lists: ``label enrol_path test_path`` per line, scored on audio files.

Each file is embedded as the recogniser embeds it (`voxid.inference.chunks`: the model's
VAD on the level as recorded, at least 0.5 s of speech, model-length chunks, the
renormalised mean of their embeddings). Files that cannot be used (missing, corrupt, too
little speech) are skipped with their trials and reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxid.card import ModelCard
from voxid.errors import DataError
from voxid.evaluation.verification import TrialScores
from voxid.inference.chunks import ChunkPolicy, embed_paths, torch_runner
from voxid.inference.scoring import as_norm

_LABELS = {"1": True, "0": False, "target": True, "nontarget": False, "tgt": True, "imp": False}


def read_trial_list(path: str | Path, audio_root: str | Path | None = None) -> list[tuple]:
    """Parse a trial list into ``(is_target, enrol_path, test_path)`` tuples.

    Relative audio paths are taken from `audio_root` (default: the list's folder).
    Blank lines and lines starting with ``#`` are ignored.
    """
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the trial list ({exc})") from None
    trials = []
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0].lower() not in _LABELS:
            raise DataError(f"{path}:{no}: expected 'label enrol_path test_path', got {line!r}")
        trials.append((_LABELS[parts[0].lower()], root / parts[1], root / parts[2]))
    if not trials:
        raise DataError(f"{path}: no trials")
    return trials


def embed_files(
    model: Any, paths: list[Path], card: ModelCard
) -> tuple[dict[Path, np.ndarray], list[tuple[str, str]]]:
    """Embeddings of audio files with a torch `SpeakerModel`; also the skipped files.

    Each file goes through `voxid.inference.chunks` with the model's policy, so its
    embedding is exactly the one `Recognizer.embed` gives for it (same VAD, minimum
    speech, chunking and averaging).
    """
    policy = ChunkPolicy.from_card(card, getattr(model, "name", "model"))
    return embed_paths(torch_runner(model), list(paths), policy)


def list_trials(
    model: Any,
    trials: list[tuple],
    card: ModelCard,
    cohort: np.ndarray | None = None,
    top_n: int = 100,
) -> tuple[dict[str, TrialScores], list[tuple[str, str]]]:
    """Cosine (and AS-norm) scores of a parsed trial list at file level."""
    paths = sorted({p for _, a, b in trials for p in (a, b)})
    emb, skipped = embed_files(model, paths, card)
    kept = [(t, a, b) for t, a, b in trials if a in emb and b in emb]
    if not kept:
        raise DataError("trial list: no trial has two usable audio files")
    is_tar = np.array([t for t, _, _ in kept])
    left = np.stack([emb[a] for _, a, _ in kept])
    right = np.stack([emb[b] for _, _, b in kept])
    raw = np.sum(left * right, axis=1)
    norm = None if cohort is None else as_norm(raw, left, right, cohort, top_n)
    info = {"trials_listed": len(trials), "trials_scored": len(kept), "files_skipped": len(skipped)}
    scores = TrialScores(
        raw[is_tar],
        raw[~is_tar],
        None if norm is None else norm[is_tar],
        None if norm is None else norm[~is_tar],
        info,
    )
    return {"file": scores}, skipped
