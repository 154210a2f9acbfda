"""The error family every user-facing failure in voxid belongs to.

Each error carries a one-line message that names the thing at fault (a file, a parameter,
a speaker) and the cause, so the CLI, the service and batch jobs can report it as is.
"""

from __future__ import annotations


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
    """A speaker registry operation that cannot be done (unknown name, wrong model...)."""


class VoxidWarning(UserWarning):
    """Something that works but is likely not what the user wants (one-line message, shown
    by the CLI as `voxid: warning: ...`)."""
