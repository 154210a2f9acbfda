"""Scoring diarization against reference turns: DER with `pyannote.metrics`, speaker count.

The collar follows the NIST md-eval convention the literature quotes ("collar 0.25 s"):
0.25 s on each side of every reference boundary is not scored, which is pyannote's
`collar=0.5` (its collar is the total width). Overlapped speech is scored (a single-speaker
output misses the second voice there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxid.diarization.rttm import Diarization
from voxid.errors import ConfigError

__all__ = ["COLLAR_S", "score"]

#: Seconds not scored on each side of a reference boundary.
COLLAR_S = 0.25


def _annotation(turns: Sequence[tuple[float, float, str]]):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for i, (a, b, who) in enumerate(turns):
        if b > a:
            ann[Segment(a, b), i] = who
    return ann


def score(
    reference: Sequence[tuple[float, float, str]],
    hypothesis: Diarization,
    collar_s: float = COLLAR_S,
) -> dict[str, Any]:
    """Seconds of missed speech, false alarm and confusion, the scored total and DER, and
    the speaker counts, of one recording."""
    try:
        from pyannote.metrics.diarization import DiarizationErrorRate
    except ImportError:
        raise ConfigError(
            "diarization scoring needs pyannote.metrics: pip install pyannote.metrics"
        ) from None
    metric = DiarizationErrorRate(collar=2 * collar_s, skip_overlap=False)
    from pyannote.core import Segment, Timeline

    hyp = _annotation([(s.start, s.end, s.speaker) for s in hypothesis.segments])
    end = max([hypothesis.duration] + [b for _, b, _ in reference])
    uem = Timeline([Segment(0.0, end)])
    parts = metric(_annotation(reference), hyp, uem=uem, detailed=True)
    n_ref = len({who for _, _, who in reference})
    return {
        "missed_s": float(parts["missed detection"]),
        "false_alarm_s": float(parts["false alarm"]),
        "confusion_s": float(parts["confusion"]),
        "total_s": float(parts["total"]),
        "der": float(parts["diarization error rate"]),
        "ref_speakers": n_ref,
        "hyp_speakers": hypothesis.num_speakers,
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Corpus-level figures of many `score` rows: DER = all errors / all scored speech."""
    total = sum(r["total_s"] for r in rows) or 1.0
    out = {
        "conversations": len(rows),
        "der": sum(r["missed_s"] + r["false_alarm_s"] + r["confusion_s"] for r in rows) / total,
        "missed": sum(r["missed_s"] for r in rows) / total,
        "false_alarm": sum(r["false_alarm_s"] for r in rows) / total,
        "confusion": sum(r["confusion_s"] for r in rows) / total,
        "count_exact": sum(r["ref_speakers"] == r["hyp_speakers"] for r in rows)
        / max(len(rows), 1),
        "count_mae": sum(abs(r["ref_speakers"] - r["hyp_speakers"]) for r in rows)
        / max(len(rows), 1),
    }
    return out
