"""Pick the demo's held-out speakers and files from a corpus; prints shell assignments.

The last three speakers (sorted) stay out of training: two to enrol, one stranger. With
`--two-casts` (the built-in corpus) the three before them are held out too: the last three
(flite's voices of real people) are the shipped base model's cast, the three before
(espeak-ng variants) the cast of the model trained on the other espeak-ng voices. A model
that heard only espeak-ng voices cannot judge flite's, nor the base model espeak-ng's (the
base model's card, limits); on real recordings one cast serves both models.
"""

from __future__ import annotations

import shlex
import sys

from voxid.data import load_corpus
from voxid.errors import VoxidError


def _cast(prefix: str, names: list[str], by_speaker: dict[str, list[str]], path: str) -> None:
    """Print `<prefix>ENROL_A`, `ENROL_B`, `STRANGER` and their files for bash."""
    a, b, stranger = names
    for name in (a, b):
        if len(by_speaker[name]) < 3:
            raise VoxidError(f"{path}: speaker {name} needs at least 3 files for the demo")
    files_a, files_b = sorted(by_speaker[a]), sorted(by_speaker[b])
    q = shlex.quote
    print(f"{prefix}ENROL_A={q(a)} {prefix}ENROL_B={q(b)} {prefix}STRANGER={q(stranger)}")
    print(f"{prefix}FILES_A=(" + " ".join(q(f) for f in files_a[:3]) + ")")
    print(f"{prefix}FILES_B=(" + " ".join(q(f) for f in files_b[:2]) + ")")
    print(f"{prefix}STRANGER_FILE={q(sorted(by_speaker[stranger])[0])}")


def main(path: str, two_casts: bool = False) -> None:
    """Print the trained model's cast (ENROL_A...), the base model's (BASE_ENROL_A...) and
    HELD_OUT, the comma-separated speakers to leave out of training."""
    corpus = load_corpus(path)
    by_speaker: dict[str, list[str]] = {}
    for row in corpus:
        by_speaker.setdefault(row.speaker, []).append(str(row.path))
    speakers = sorted(by_speaker)
    need = 8 if two_casts else 5
    if len(speakers) < need:
        raise VoxidError(f"{path}: the demo needs at least {need} speakers, found {len(speakers)}")
    base = speakers[-3:]
    trained = speakers[-6:-3] if two_casts else base
    _cast("BASE_", base, by_speaker, path)
    _cast("", trained, by_speaker, path)
    print(f"HELD_OUT={shlex.quote(','.join(dict.fromkeys(trained + base)))}")


if __name__ == "__main__":
    try:
        main(sys.argv[1], "--two-casts" in sys.argv[2:])
    except VoxidError as exc:
        print(f"echo 'demo: {exc}' >&2; exit 2")
