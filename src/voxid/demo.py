"""A small, deterministic multi-speaker corpus spoken by espeak-ng, for demos and tests.

Each "speaker" is an espeak-ng voice variant with its own pitch, speed and accent, so the
voices differ the way real speakers do (timbre, pitch, rhythm), and every run of the same
arguments writes the same files.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxid.errors import VoxidError

#: (name, espeak voice, variant, pitch 0-99, words per minute)
VOICES: tuple[tuple[str, str, str, int, int], ...] = (
    ("alice", "en-us", "f1", 62, 165),
    ("bruno", "en-us", "m3", 35, 150),
    ("chloe", "en-gb", "f3", 70, 175),
    ("david", "en-gb-scotland", "m1", 28, 145),
    ("elena", "en-us", "f4", 55, 185),
    ("farid", "en-029", "m2", 45, 160),
    ("grace", "en-gb-x-rp", "f2", 80, 150),
    ("henry", "en-us", "m7", 20, 170),
    ("irene", "en-gb-x-gbclan", "f5", 66, 140),
    ("jonas", "en-gb-x-gbcwmd", "m4", 40, 190),
    ("karen", "en-us", "f1", 90, 155),
    ("louis", "en-gb", "m6", 52, 135),
    ("mateo", "es", "pablo", 45, 160),
    ("nadia", "en-us", "Annie", 60, 170),
    ("oliver", "en-gb-x-rp", "robert", 38, 150),
    ("priya", "en-029", "Andy", 70, 165),
    ("quentin", "fr", "michel", 42, 155),
    ("ruth", "en-gb", "linda", 75, 145),
    ("simon", "en-gb-scotland", "paul", 30, 175),
    ("tessa", "en-us", "steph", 85, 160),
)

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
    out: str | Path, n_speakers: int = 20, n_sentences: int = 30, *, offset: int = 0
) -> DemoCorpus:
    """Speak `n_sentences` sentences with each of `n_speakers` voices into `out/<speaker>/`.

    Files are 16-bit WAV at espeak-ng's 22,050 Hz. Existing files are kept (the output is
    deterministic), so a second call is cheap. `offset` picks later sentences, for example
    to make held-out utterances.
    """
    if not 1 <= n_speakers <= len(VOICES):
        raise VoxidError(f"n_speakers: must be between 1 and {len(VOICES)}, got {n_speakers}")
    if n_sentences < 1:
        raise VoxidError(f"n_sentences: must be at least 1, got {n_sentences}")
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VoxidError("espeak-ng: not installed (apt-get install espeak-ng, or run make setup)")
    root = Path(out)
    voices = VOICES[:n_speakers]
    for name, voice, variant, pitch, wpm in voices:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + n_sentences):
            target = folder / f"{name}_{i:03d}.wav"
            if target.exists():
                continue
            # Write beside the target then rename: an interrupted run leaves no torn file.
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
                tmp_path = Path(tmp.name)
            try:
                subprocess.run(
                    [
                        exe,
                        "-v",
                        f"{voice}+{variant}",
                        "-p",
                        str(pitch),
                        "-s",
                        str(wpm),
                        "-w",
                        str(tmp_path),
                        sentence(i),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                tmp_path.replace(target)
            finally:
                tmp_path.unlink(missing_ok=True)
    return DemoCorpus(root, tuple(v[0] for v in voices), n_sentences)
