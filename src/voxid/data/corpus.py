"""The corpus table: which audio files exist, who speaks in each, and which split holds it.

A corpus comes from a folder of speaker folders (the speaker is the first folder under the
root, so VoxCeleb's `id/video/utt.wav` works as is) or from a CSV manifest (`path,speaker`
plus optional `split`, `group` and any other columns, paths relative to the CSV's folder).
A folder holding a `manifest.csv` is read through it. Several corpora combine into one table
whose speaker ids are `<corpus>/<speaker>`, so equal names in two corpora never collide.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from voxid.errors import DataError, reason

__all__ = [
    "Corpus",
    "CorpusItem",
    "SpeakerSpec",
    "combine",
    "load_corpus",
    "read_manifest",
    "scan_folder",
]

MANIFEST_NAME = "manifest.csv"
#: Why a symbolic link to a folder is skipped (a link loop, or one to `/`, would be walked).
LINKED_FOLDER = "symbolic link to a folder, not followed"
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_RESERVED = {"path", "speaker", "split"}
# Control characters in a name would corrupt logs, CSVs and terminal output.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CorpusItem:
    """One audio file: absolute `path`, `speaker` id, `split` (None if not yet assigned)
    and the manifest's other columns in `extra` (e.g. `take`, `gender`, `group`)."""

    path: Path
    speaker: str
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Corpus:
    """A table of audio files plus the inputs that were rejected while reading it.

    >>> c = Corpus([CorpusItem(Path("/a/x.wav"), "ann"), CorpusItem(Path("/a/y.wav"), "bob")])
    >>> len(c), c.speakers
    (2, ['ann', 'bob'])
    """

    items: list[CorpusItem]
    name: str = "corpus"
    root: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[CorpusItem]:
        return iter(self.items)

    @property
    def speakers(self) -> list[str]:
        """Sorted distinct speaker ids."""
        return sorted({it.speaker for it in self.items})

    @property
    def columns(self) -> list[str]:
        """Names of the extra manifest columns present on any item, sorted."""
        return sorted({k for it in self.items for k in it.extra})

    def with_items(self, items: Iterable[CorpusItem]) -> Corpus:
        """A copy of this corpus holding `items` instead (same name, root, skipped)."""
        return Corpus(list(items), self.name, self.root, list(self.skipped))

    def filter_speakers(
        self, include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None
    ) -> Corpus:
        """Keep speakers matching `include` (all if None) and not matching `exclude`.

        Specs are lists or comma-separated strings of names and numeric ranges such as
        `00000021-00000030` (see `SpeakerSpec`).

        >>> c = Corpus([CorpusItem(Path(f"/a/{i}.wav"), f"{i:03d}") for i in range(1, 6)])
        >>> c.filter_speakers("002-004", exclude="003").speakers
        ['002', '004']
        """
        inc = SpeakerSpec.parse(include) if include else None
        exc = SpeakerSpec.parse(exclude) if exclude else None
        kept = [
            it
            for it in self.items
            if (inc is None or inc.matches(it.speaker)) and not (exc and exc.matches(it.speaker))
        ]
        return self.with_items(kept)


@dataclass(frozen=True)
class SpeakerSpec:
    """A set of speakers written as names and zero-padded numeric ranges.

    A range `a-b` whose ends are digits of equal width matches digit names of that width
    between them, so `00000021-00000030` never matches LibriSpeech's speaker `26`.
    A token may carry a corpus prefix (`asc30/00000021-00000030`), and then matches only
    speaker ids of that corpus; a bare token also matches the part after a prefix.

    >>> spec = SpeakerSpec.parse("00000021-00000030, alice")
    >>> [spec.matches(s) for s in ("00000025", "26", "alice", "asc30/00000030", "bob")]
    [True, False, True, True, False]
    """

    names: frozenset[str]
    ranges: tuple[tuple[str | None, str, str], ...]  # (corpus prefix or None, low, high)

    @classmethod
    def parse(cls, spec: str | Sequence[str]) -> SpeakerSpec:
        """Parse a comma-separated string or a list of tokens; raises DataError if malformed."""
        tokens = (
            spec.split(",") if isinstance(spec, str) else [t for s in spec for t in s.split(",")]
        )
        names, ranges = set(), []
        for raw in tokens:
            tok = raw.strip()
            if not tok:
                continue
            prefix, _, bare = tok.rpartition("/")
            m = re.fullmatch(r"(\d+)-(\d+)", bare)
            if m and len(m[1]) == len(m[2]):
                if m[1] > m[2]:
                    raise DataError(f"speakers: range '{tok}' runs backwards")
                ranges.append((prefix or None, m[1], m[2]))
            else:
                names.add(tok)
        if not names and not ranges:
            raise DataError(f"speakers: no speaker names in {spec!r}")
        return cls(frozenset(names), tuple(ranges))

    def matches(self, speaker: str) -> bool:
        """True when `speaker` (bare or `corpus/speaker`) is in this set."""
        prefix, _, bare = speaker.rpartition("/")
        if speaker in self.names or bare in self.names:
            return True
        for rp, low, high in self.ranges:
            if rp is not None and rp != prefix:
                continue
            if bare.isdigit() and len(bare) == len(low) and low <= bare <= high:
                return True
        return False


def _clean_speaker(name: str, where: str) -> str:
    name = name.strip()
    if not name:
        raise DataError(f"{where}: empty speaker name")
    if _CONTROL.search(name):
        raise DataError(f"{where}: speaker name contains control characters")
    return name


def special_file(path: Path) -> str | None:
    """Why `path` (links followed) must not be read as audio, or None for a regular file
    or one that does not exist (the decoder reports that). Reading a FIFO blocks until
    someone writes to it, and a device may never end.

    >>> special_file(Path("/dev/null"))
    'not a regular file (a character device)'
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def scan_folder(root: str | os.PathLike) -> Corpus:
    """Find audio files in speaker folders at any depth under `root`.

    The speaker is the first folder under `root`; files directly in `root`, hidden files
    and folders, symbolic links leading outside `root`, symbolic links to folders (not
    followed, which keeps a link loop or a link to `/` from being walked) and FIFOs,
    sockets or devices named like audio are skipped and reported.
    """
    from voxid.audio import AUDIO_EXTENSIONS

    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    items, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        skipped += [(os.path.join(dirpath, d), LINKED_FOLDER) for d in linked]
        rel_dir = Path(dirpath).relative_to(root)
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            path = Path(dirpath) / fname
            if not rel_dir.parts:
                skipped.append((str(path), "not inside a speaker folder"))
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                skipped.append((str(path), "symbolic link leads outside the corpus"))
                continue
            special = special_file(path)
            if special:
                skipped.append((str(path), special))
                continue
            try:
                speaker = _clean_speaker(rel_dir.parts[0], str(path))
            except DataError as exc:
                skipped.append((str(path), reason(exc, path)))
                continue
            items.append(CorpusItem(path, speaker))
    if not items:
        links = sum(why == LINKED_FOLDER for _, why in skipped)
        hint = f" ({links} symbolic links to folders not followed: copy them in)" if links else ""
        raise DataError(f"{root}: no audio files in speaker folders{hint}")
    return Corpus(items, root.name, root, skipped)


def read_manifest(csv_path: str | os.PathLike) -> Corpus:
    """Read a CSV manifest (`path,speaker[,split][,other columns]`).

    Paths are relative to the CSV's folder (absolute paths are accepted as they are);
    a relative path that climbs out of that folder (`../`) is rejected and reported.
    Rows with an empty path or speaker, or naming a FIFO, socket or device, are skipped and
    reported.
    """
    csv_path = Path(csv_path).resolve()
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    base = csv_path.parent
    items, skipped = [], []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "path" not in fields or "speaker" not in fields:
                raise DataError(
                    f"{csv_path}: manifest needs 'path' and 'speaker' columns, found {fields}"
                )
            for lineno, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                where = f"{csv_path}:{lineno}"
                rel = row.get("path", "")
                if not rel:
                    skipped.append((where, "empty path"))
                    continue
                p = Path(rel)
                if not p.is_absolute():
                    p = (base / p).resolve()
                    if not p.is_relative_to(base):
                        skipped.append((f"{where} {rel}", "path leaves the manifest's folder"))
                        continue
                special = special_file(p)
                if special:
                    skipped.append((f"{where} {rel}", special))
                    continue
                try:
                    speaker = _clean_speaker(row.get("speaker", ""), where)
                except DataError as exc:
                    skipped.append((where, reason(exc, where)))
                    continue
                extra = {k: v for k, v in row.items() if k and k not in _RESERVED}
                items.append(CorpusItem(p, speaker, row.get("split") or None, extra))
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc})") from None
    if not items:
        raise DataError(f"{csv_path}: manifest lists no usable files")
    return Corpus(items, base.name, base, skipped)


def load_corpus(path: str | os.PathLike) -> Corpus:
    """A corpus from a CSV manifest, a folder with `manifest.csv`, or a folder to scan."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{p}: expected a folder or a .csv manifest")
        return read_manifest(p)
    if (p / MANIFEST_NAME).is_file():
        return read_manifest(p / MANIFEST_NAME)
    return scan_folder(p)


def combine(corpora: Sequence[Corpus]) -> Corpus:
    """Merge corpora; with more than one, speaker ids become `<corpus name>/<speaker>`.

    >>> a = Corpus([CorpusItem(Path("/a/1.wav"), "x")], name="a")
    >>> b = Corpus([CorpusItem(Path("/b/1.wav"), "x")], name="b")
    >>> combine([a, b]).speakers
    ['a/x', 'b/x']
    """
    if not corpora:
        raise DataError("data: no corpus given")
    if len(corpora) == 1:
        return corpora[0]
    names = [c.name for c in corpora]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DataError(
            f"data: two corpora share the folder name {sorted(dupes)[0]!r}; "
            "speaker ids would collide"
        )
    items = [replace(it, speaker=f"{c.name}/{it.speaker}") for c in corpora for it in c.items]
    skipped = [s for c in corpora for s in c.skipped]
    return Corpus(items, "+".join(names), None, skipped)
