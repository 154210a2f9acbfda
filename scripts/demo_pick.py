"""Pick the demo's held-out speakers and files from a corpus; prints shell assignments.

The last three speakers (sorted) stay out of training: two to enrol, one stranger.
"""

from __future__ import annotations

import shlex
import sys

from voxid.data import load_corpus
from voxid.errors import VoxidError


def main(path: str) -> None:
    """Print ENROL_A, ENROL_B, STRANGER, FILES_A, FILES_B and STRANGER_FILE for bash."""
    corpus = load_corpus(path)
    by_speaker: dict[str, list[str]] = {}
    for row in corpus:
        by_speaker.setdefault(row.speaker, []).append(str(row.path))
    speakers = sorted(by_speaker)
    if len(speakers) < 5:
        raise VoxidError(f"{path}: the demo needs at least 5 speakers, found {len(speakers)}")
    a, b, stranger = speakers[-3:]
    for name in (a, b):
        if len(by_speaker[name]) < 3:
            raise VoxidError(f"{path}: speaker {name} needs at least 3 files for the demo")
    files_a, files_b = sorted(by_speaker[a]), sorted(by_speaker[b])
    print(f"ENROL_A={shlex.quote(a)} ENROL_B={shlex.quote(b)} STRANGER={shlex.quote(stranger)}")
    print("FILES_A=(" + " ".join(shlex.quote(f) for f in files_a[:3]) + ")")
    print("FILES_B=(" + " ".join(shlex.quote(f) for f in files_b[:2]) + ")")
    print(f"STRANGER_FILE={shlex.quote(sorted(by_speaker[stranger])[0])}")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except VoxidError as exc:
        print(f"echo 'demo: {exc}' >&2; exit 2")
