"""voxid: tell who is speaking.

Prepare audio, train a speaker model, measure it honestly, then enrol, verify and identify
speakers from Python, the command line, a web service or a live microphone.

The package exports `Recognizer` (the Python API), `load_audio` (the one decoder),
`VoxidError` (the base of every user-facing error, one-line message) and `AudioError`.

Examples
--------
>>> import voxid
>>> rec = voxid.Recognizer.load(registry=None)  # the shipped base model
>>> rec.n_speakers()
0
>>> rec = voxid.Recognizer.load("base", registry="speakers.db")  # doctest: +SKIP
>>> rec.enroll("ruth", ["ruth1.wav", "ruth2.wav"])                 # doctest: +SKIP
>>> rec.identify(voxid.load_audio("who.wav"), sr=16000).name      # doctest: +SKIP
'ruth'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxid._version import __version__

__all__ = ["AudioError", "Recognizer", "VoxidError", "__version__", "load_audio"]

if TYPE_CHECKING:  # pragma: no cover
    from voxid.audio import AudioError, load_audio
    from voxid.errors import VoxidError
    from voxid.inference.recognizer import Recognizer


def __getattr__(name: str) -> Any:
    # Lazy: `import voxid` stays fast and does not pull torch in for the CLI's --help.
    if name == "Recognizer":
        from voxid.inference.recognizer import Recognizer

        return Recognizer
    if name in ("load_audio", "AudioError"):
        from voxid import audio

        return getattr(audio, name)
    if name == "VoxidError":
        from voxid.errors import VoxidError

        return VoxidError
    raise AttributeError(f"module 'voxid' has no attribute {name!r}")
