"""voxid: tell who is speaking.

Prepare audio, train a speaker model, measure it honestly, then enrol, verify and identify
speakers from Python, the command line, a web service or a live microphone.
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
