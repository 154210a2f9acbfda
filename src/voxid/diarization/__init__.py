"""Who spoke when: split a recording into speaker turns, named from the registry.

>>> from voxid import Recognizer                          # doctest: +SKIP
>>> rec = Recognizer.load(registry="speakers.db")          # doctest: +SKIP
>>> result = rec.diarize("meeting.wav", max_speakers=4)    # doctest: +SKIP
>>> result.segments[0]                                     # doctest: +SKIP
Segment(start=0.35, end=4.2, speaker='Alice', score=5.1)
>>> open("meeting.rttm", "w").write(result.to_rttm("meeting"))  # doctest: +SKIP
"""

from voxid.diarization.pipeline import (
    DiarizationConfig,
    Embedder,
    Windows,
    centroid_namer,
    diarize,
    diarize_windows,
    embed_windows,
)
from voxid.diarization.rttm import Diarization, Segment, SpeakerSummary, parse_rttm

__all__ = [
    "Diarization",
    "DiarizationConfig",
    "Embedder",
    "Segment",
    "SpeakerSummary",
    "Windows",
    "centroid_namer",
    "diarize",
    "diarize_windows",
    "embed_windows",
    "parse_rttm",
]
