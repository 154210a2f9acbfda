"""Typed diarization results and the RTTM format (NIST Rich Transcription Time Marked).

An RTTM speaker line has ten space-separated fields:
`SPEAKER <file-id> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>`, times in
seconds. Names may not hold whitespace there, so it is replaced by `_` on writing.

>>> d = Diarization([Segment(0.5, 2.0, "Alice", 4.1), Segment(2.2, 3.0, "SPEAKER_00")], 3.0)
>>> print(d.to_rttm("call"))
SPEAKER call 1 0.500 1.500 <NA> <NA> Alice <NA> <NA>
SPEAKER call 1 2.200 0.800 <NA> <NA> SPEAKER_00 <NA> <NA>
<BLANKLINE>
>>> [s.speaker for s in parse_rttm(d.to_rttm("call"))["call"]]
['Alice', 'SPEAKER_00']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from voxid.errors import ConfigError

__all__ = ["Diarization", "Segment", "SpeakerSummary", "parse_rttm"]

#: Label of a speaker who matched nobody enrolled: SPEAKER_00, SPEAKER_01, ...
ANONYMOUS = "SPEAKER_{:02d}"


@dataclass(frozen=True)
class Segment:
    """One speaker turn: `[start, end)` in seconds, who, and the registry score of the
    speaker's name when it came from the registry (AS-normed as `identify` scores), else None.
    """

    start: float
    end: float
    speaker: str
    score: float | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """Plain data, times rounded to milliseconds."""
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "speaker": self.speaker,
            "score": None if self.score is None else round(float(self.score), 4),
        }


@dataclass(frozen=True)
class SpeakerSummary:
    """One speaker of a diarization: label, whether it is an enrolled name, the best
    registry score of its cluster (None without enrolled speakers) and its speech time."""

    label: str
    enrolled: bool
    score: float | None
    speech_s: float


@dataclass
class Diarization:
    """Who spoke when in one recording.

    Arguments:
        segments: speaker turns sorted by start; one speaker at a time (overlapped speech
            is given to the dominant speaker).
        duration: length of the recording in seconds.
        speakers: one summary per label, in order of first appearance.
        threshold: the registry threshold names were decided with (None: no registry).
    """

    segments: list[Segment]
    duration: float
    speakers: list[SpeakerSummary] = field(default_factory=list)
    threshold: float | None = None

    @property
    def labels(self) -> list[str]:
        """Speaker labels in order of first appearance."""
        seen: dict[str, None] = {}
        for s in self.segments:
            seen.setdefault(s.speaker, None)
        return list(seen)

    @property
    def num_speakers(self) -> int:
        """How many speakers were found."""
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: duration, speakers, segments."""
        return {
            "duration_s": round(self.duration, 3),
            "num_speakers": self.num_speakers,
            "threshold": self.threshold,
            "speakers": [_summary(s) for s in self.speakers],
            "segments": [s.to_dict() for s in self.segments],
        }

    def to_rttm(self, file_id: str, channel: int = 1) -> str:
        """The segments as RTTM lines (one per segment, newline-terminated)."""
        fid = _token(file_id, "file_id")
        return "".join(
            f"SPEAKER {fid} {channel} {s.start:.3f} {s.duration:.3f} <NA> <NA> "
            f"{_token(s.speaker, 'speaker')} <NA> <NA>\n"
            for s in self.segments
        )


def _summary(s: SpeakerSummary) -> dict[str, Any]:
    score = None if s.score is None else round(float(s.score), 4)
    return {**asdict(s), "speech_s": round(s.speech_s, 3), "score": score}


def _token(text: str, what: str) -> str:
    clean = re.sub(r"\s+", "_", str(text).strip())
    if not clean:
        raise ConfigError(f"{what}: empty, an RTTM field needs a value")
    return clean


def parse_rttm(text: str) -> dict[str, list[Segment]]:
    """Speaker segments of RTTM text by file id (other line types are skipped).

    Raises ConfigError naming the line for a malformed SPEAKER line.
    """
    out: dict[str, list[Segment]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 9:
            raise ConfigError(f"RTTM line {n}: {len(fields)} fields, expected 10")
        try:
            onset, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise ConfigError(f"RTTM line {n}: onset/duration are not numbers") from None
        if onset < 0 or dur < 0:
            raise ConfigError(f"RTTM line {n}: negative onset or duration")
        out.setdefault(fields[1], []).append(Segment(onset, onset + dur, fields[7]))
    return out
