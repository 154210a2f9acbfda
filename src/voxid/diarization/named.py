"""Diarize with a recogniser: its backend's embeddings, clusters named from its registry.

The entry point lives here, not on `Recognizer`: diarization is built on inference (the
backend, the chunk path, the registry), so inference must not import it back.

>>> from voxid.inference.recognizer import Recognizer               # doctest: +SKIP
>>> rec = Recognizer.load(registry="speakers.db")                    # doctest: +SKIP
>>> diarize_with(rec, "meeting.wav", max_speakers=4).num_speakers    # doctest: +SKIP
2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voxid.diarization.pipeline import DiarizationConfig, diarize, registry_namer
from voxid.diarization.rttm import Diarization


def diarize_with(
    recognizer: Any,
    audio: Any,
    num_speakers: int | None = None,
    max_speakers: int | None = None,
    *,
    sr: int | None = None,
    config: DiarizationConfig | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Diarization:
    """Who spoke when in `audio`, with `recognizer` (a `voxid.inference.recognizer.Recognizer`).

    A speaker whose voice matches someone enrolled (scored as `identify` scores, against
    the recogniser's threshold) is given that name; the others are SPEAKER_00, ...
    `num_speakers` fixes the count; otherwise it is estimated, up to `max_speakers`.
    See `voxid.diarization.diarize` for `config` and `on_progress`.
    """
    recognizer._require_embeddings("diarize")
    namer, threshold = registry_namer(recognizer)
    return diarize(
        recognizer.backend,
        audio,
        sr=sr,
        config=config,
        num_speakers=num_speakers,
        max_speakers=max_speakers,
        namer=namer,
        threshold=threshold,
        on_progress=on_progress,
    )
