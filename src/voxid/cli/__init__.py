"""The `voxid` command line: a thin typer app; each area registers its own commands.

The commands hold no logic of their own: they parse arguments and call into the library.
Heavy modules (torch, h5py...) are imported inside the commands so `voxid --help` is fast.
"""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a busy
# machine with few cores spinning threads fight any other job and slow it several times
# over (figures: BENCHMARKS.md, P-C notes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import warnings

import typer

from voxid.errors import VoxidError, VoxidWarning, printable

_format_warning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    # voxid's own warnings are for the user: one line, no source location.
    if issubclass(category, VoxidWarning):
        return f"voxid: warning: {printable(message)}\n"
    return _format_warning(message, category, filename, lineno, line)


warnings.formatwarning = _one_line_warning

app = typer.Typer(
    name="voxid",
    help="Tell who is speaking: prepare, train, evaluate, enrol, verify, identify, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: rich's option tables cut option names at 80 columns, show flags
    # as "<bool>" (inviting "--json true") and read "[default: ...]" in help as markup.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Tell who is speaking: prepare, train, evaluate, enrol, verify, identify, serve."""


@app.command()
def version() -> None:
    """Print the voxid version."""
    from voxid._version import __version__

    print(__version__)


def _register_all() -> None:
    from voxid.cli import data_cmds, diarize_cmds, eval_cmds, recog_cmds, serve_cmds, train_cmds

    for module in (data_cmds, train_cmds, eval_cmds, recog_cmds, diarize_cmds, serve_cmds):
        module.register(app)


_register_all()


def main() -> None:
    """Run the CLI; a user error becomes one line on stderr and exit status 1."""
    try:
        app()  # standalone mode: typer reports usage errors and sets the exit status
    except VoxidError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)  # one line, whatever a name holds
        sys.exit(1)


if __name__ == "__main__":
    main()
