"""The error family every user-facing failure in voxid belongs to.

Each error carries a one-line message that names the thing at fault (a file, a parameter,
a speaker) and the cause, so the CLI, the service and batch jobs can report it as is.
"""

from __future__ import annotations

import math
import numbers
import unicodedata

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates reorder what a terminal shows (Trojan Source).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class VoxidError(Exception):
    """Base class for errors that are the user's input, not a bug in voxid.

    >>> str(VoxidError("speakers.db: not a voxid registry"))
    'speakers.db: not a voxid registry'
    """


class ConfigError(VoxidError, ValueError):
    """A bad parameter or configuration value (names the key and what is wrong)."""


class DataError(VoxidError):
    """A corpus, manifest or store that cannot be used (names the path and the cause)."""


class ModelError(VoxidError):
    """A checkpoint or model that cannot be used for what was asked."""


class RegistryError(VoxidError):
    """A speaker registry operation that cannot be done (unknown name, wrong model...).

    The subclasses below name the conditions callers act on (the service answers each
    with its own HTTP status), so nobody has to read the message to tell them apart.
    """


class UnknownSpeaker(RegistryError):
    """The speaker named is not enrolled (nor, where asked for, a training speaker).

    >>> isinstance(UnknownSpeaker("speaker 'bo': not enrolled"), RegistryError)
    True
    """


class NoSpeakersEnrolled(RegistryError):
    """Nobody is enrolled to compare with (identify, listen)."""


class ModelMismatch(RegistryError):
    """Embeddings of one model offered to a registry holding another model's speakers
    (or of another size than the speaker's stored ones)."""


class NoSuchRegistry(RegistryError):
    """The registry named does not exist (and was not to be created)."""


class RegistryUnavailable(RegistryError):
    """The registry exists but cannot be reached now (its database server is down or
    refuses the connection, or the file stays locked past the timeout): try again later."""


class VoxidWarning(UserWarning):
    """Something that works but is likely not what the user wants (one-line message, shown
    by the CLI as `voxid: warning: ...`)."""


def require_positive(
    name: str,
    value: object,
    *,
    integer: bool = False,
    seconds: bool = False,
    optional: bool = False,
) -> None:
    """Raise :class:`ConfigError` naming `name` unless `value` is a number above zero (not a
    bool, not NaN), so that every bad parameter reads alike:
    `name: must be a positive integer, got 0`.

    Arguments
    ---------
    name : str
        The parameter as the user knows it (an option, a config key).
    value : object
        Its value.
    integer : bool
        It must be a whole number (a Python or NumPy integer).
    seconds : bool
        It is a duration, so also finite ("a positive number of seconds").
    optional : bool
        None is allowed too (the message says so).

    Example
    -------
    >>> require_positive("batch_size", 8, integer=True)
    >>> require_positive("batch_size", 0, integer=True)
    Traceback (most recent call last):
    ...
    voxid.errors.ConfigError: batch_size: must be a positive integer, got 0
    >>> require_positive("max_seconds", None, seconds=True, optional=True)
    >>> require_positive("max_seconds", float("nan"), seconds=True, optional=True)
    Traceback (most recent call last):
    ...
    voxid.errors.ConfigError: max_seconds: must be a positive number of seconds or None, got nan
    """
    if optional and value is None:
        return
    kind = numbers.Integral if integer else numbers.Real
    number: float | None = None
    if isinstance(value, kind) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range is still positive or not
            number = math.inf if value > 0 else -math.inf  # type: ignore[operator]
    ok = number is not None and number > 0 and (math.isfinite(number) or not seconds)
    if not ok:
        what = "integer" if integer else "number of seconds" if seconds else "number"
        raise ConfigError(
            f"{name}: must be a positive {what}{' or None' if optional else ''}, got {value!r}"
        )


def printable(text: object) -> str:
    r"""`text` safe to print on one terminal line: control characters (an ANSI escape, a
    newline in a file name) and bidirectional overrides become backslash escapes.

    >>> printable("red\x1b[31m\nline.wav")
    'red\\x1b[31m\\nline.wav'
    >>> printable("Zoë.wav")
    'Zoë.wav'
    """
    out = []
    for ch in str(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) == "Cc" or ch in _BIDI:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def reason(exc: BaseException | str, subject: object) -> str:
    """The cause in `exc`'s message without the `subject: ` it starts with (a file name
    may itself hold ": ", so the prefix is matched whole, never split at).

    >>> reason(DataError("take: one.wav: corrupt"), "take: one.wav")
    'corrupt'
    >>> reason(DataError("something else"), "x.wav")
    'something else'
    """
    text = str(exc)
    for name in (str(subject), printable(subject)):
        if text.startswith(f"{name}: "):
            return text[len(name) + 2 :]
    return text
