"""A small, deterministic multi-speaker corpus for demos and tests, spoken by two Debian
speech synthesisers.

Twenty "speakers" are espeak-ng voice variants, each with its own pitch, speed and accent;
three more are flite's voices built from recordings of real people (slt, rms, awb). Every run
of the same arguments writes the same files.

espeak-ng's variants share one formant synthesiser, and a model that heard only real voices
hears them as alike: at the shipped base model's threshold half or more of their pairs pass
as one speaker. flite's three voices keep their speakers' timbre and are told apart like real
people, so the demo enrols and rejects those with the base model.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voxid.errors import VoxidError


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: its folder name, synthesiser and that synthesiser's settings."""

    name: str
    engine: str  # "espeak-ng" or "flite"
    voice: str
    variant: str = ""
    pitch: int = 50  # espeak-ng only, 0-99
    wpm: int = 160  # espeak-ng only

    def command(self, exe: str, text: str, out: Path) -> list[str]:
        """The synthesiser's command line speaking `text` into the WAV file `out`."""
        if self.engine == "flite":
            return [exe, "-voice", self.voice, "-t", text, "-o", str(out)]
        return [
            exe, "-v", f"{self.voice}+{self.variant}", "-p", str(self.pitch),
            "-s", str(self.wpm), "-w", str(out), text,
        ]  # fmt: skip


def _espeak(name: str, voice: str, variant: str, pitch: int, wpm: int) -> Voice:
    return Voice(name, "espeak-ng", voice, variant, pitch, wpm)


#: The corpus's voices in order: `synthesize_corpus(n_speakers=n)` takes the first n.
VOICES: tuple[Voice, ...] = (
    _espeak("alice", "en-us", "f1", 62, 165),
    _espeak("bruno", "en-us", "m3", 35, 150),
    _espeak("chloe", "en-gb", "f3", 70, 175),
    _espeak("david", "en-gb-scotland", "m1", 28, 145),
    _espeak("elena", "en-us", "f4", 55, 185),
    _espeak("farid", "en-029", "m2", 45, 160),
    _espeak("grace", "en-gb-x-rp", "f2", 80, 150),
    _espeak("henry", "en-us", "m7", 20, 170),
    _espeak("irene", "en-gb-x-gbclan", "f5", 66, 140),
    _espeak("jonas", "en-gb-x-gbcwmd", "m4", 40, 190),
    _espeak("karen", "en-us", "f1", 90, 155),
    _espeak("louis", "en-gb", "m6", 52, 135),
    _espeak("mateo", "es", "pablo", 45, 160),
    _espeak("nadia", "en-us", "Annie", 60, 170),
    _espeak("oliver", "en-gb-x-rp", "robert", 38, 150),
    _espeak("priya", "en-029", "Andy", 70, 165),
    _espeak("quentin", "fr", "michel", 42, 155),
    _espeak("ruth", "en-gb", "linda", 75, 145),
    _espeak("simon", "en-gb-scotland", "paul", 30, 175),
    _espeak("tessa", "en-us", "steph", 85, 160),
    # Named to sort last: the demo holds the last three speakers out of training.
    Voice("ursula", "flite", "slt"),
    Voice("victor", "flite", "rms"),
    Voice("walter", "flite", "awb"),
)
_BY_NAME = {v.name: v for v in VOICES}

_SUBJECTS = (
    "The old captain",
    "A quiet student",
    "My neighbour",
    "The young doctor",
    "Every farmer",
    "The tall engineer",
    "Our teacher",
    "A curious child",
)
_VERBS = ("carried", "painted", "found", "counted", "opened", "described", "repaired", "sold")
_OBJECTS = (
    "seven green boxes",
    "the broken window",
    "a map of the river",
    "three warm loaves",
    "the silver bicycle",
    "an empty basket",
    "the heavy wooden door",
    "twelve letters",
)
_ENDINGS = (
    "before the storm arrived.",
    "near the railway station.",
    "on a cold winter morning.",
    "without saying a word.",
    "while the band was playing.",
    "at the edge of town.",
    "for the second time today.",
    "under the bright yellow lamp.",
)


def sentence(i: int) -> str:
    """The i-th demo sentence: varied words, so voices are compared on different content.

    >>> sentence(0)
    'The old captain carried seven green boxes before the storm arrived.'
    """
    return (
        f"{_SUBJECTS[i % 8]} {_VERBS[(i // 8 + i) % 8]} "
        f"{_OBJECTS[(i * 3 + i // 8) % 8]} {_ENDINGS[(i * 5 + i // 3) % 8]}"
    )


@dataclass(frozen=True)
class DemoCorpus:
    """Where a synthesised corpus was written and what it holds."""

    root: Path
    speakers: tuple[str, ...]
    files_per_speaker: int


def synthesize_corpus(
    out: str | Path,
    n_speakers: int | None = None,
    n_sentences: int = 30,
    *,
    offset: int = 0,
    voices: Sequence[str] | None = None,
) -> DemoCorpus:
    """Speak `n_sentences` sentences with each voice into `out/<speaker>/`.

    The voices are the first `n_speakers` of `VOICES` (default: all of them), or those
    named in `voices`. Files are 16-bit WAV at the synthesiser's rate (espeak-ng 22,050 Hz,
    flite 16 kHz). Existing files are kept (the output is deterministic), so a second call
    is cheap. `offset` picks later sentences, for example to make held-out utterances.
    """
    if voices is not None:
        if n_speakers is not None:
            raise VoxidError("voices: give either n_speakers or voices, not both")
        unknown = [v for v in voices if v not in _BY_NAME]
        if unknown or not voices:
            raise VoxidError(
                f"voices: unknown voice {unknown[0]!r}" if unknown else "voices: none given"
            )
        chosen = tuple(_BY_NAME[v] for v in dict.fromkeys(voices))
    else:
        n = len(VOICES) if n_speakers is None else n_speakers
        if not 1 <= n <= len(VOICES):
            raise VoxidError(f"n_speakers: must be between 1 and {len(VOICES)}, got {n}")
        chosen = VOICES[:n]
    if n_sentences < 1:
        raise VoxidError(f"n_sentences: must be at least 1, got {n_sentences}")
    exes: dict[str, str] = {}
    for engine in dict.fromkeys(v.engine for v in chosen):
        exe = shutil.which(engine)
        if exe is None:
            raise VoxidError(f"{engine}: not installed (apt-get install {engine}, or make setup)")
        exes[engine] = exe
    root = Path(out)
    for v in chosen:
        folder = root / v.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + n_sentences):
            target = folder / f"{v.name}_{i:03d}.wav"
            if target.exists():
                continue
            # Write beside the target then rename: an interrupted run leaves no torn file.
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
                tmp_path = Path(tmp.name)
            try:
                subprocess.run(
                    v.command(exes[v.engine], sentence(i), tmp_path),
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                tmp_path.replace(target)
            finally:
                tmp_path.unlink(missing_ok=True)
    return DemoCorpus(root, tuple(v.name for v in chosen), n_sentences)
