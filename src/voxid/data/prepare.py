"""`prepare`: corpus -> HDF5 store (`voxid.data.store` describes the layout it writes).

The driver: a process pool over files (`voxid.data._process`), results written in corpus
order, oversampling, and an atomic rename of the finished file, so an interrupted run
leaves no half-written store (`remove_stale_partials` cleans up after a killed one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxid.data._process import FileJob, FileResult, init_worker, process_file
from voxid.data.corpus import SpeakerSpec
from voxid.data.store import FORMAT_VERSION
from voxid.errors import ConfigError, DataError, require_positive
from voxid.features import FeatureConfig
from voxid.io import atomic_write
from voxid.vad import ChunkConfig, VadConfig

__all__ = ["PrepareConfig", "PrepareReport", "prepare", "remove_stale_partials", "run_prepare"]


@dataclass
class PrepareConfig:
    """Settings of `prepare`: features, VAD, chunking, offline augmentation, balancing.

    Arguments
    ---------
    feature: a `voxid.features.FeatureConfig` (its sample rate is the store's).
    vad: a `voxid.vad.VadConfig` (`enabled=False` keeps silences).
    chunk: a `voxid.vad.ChunkConfig`, or None to store whole files (image recipe).
    augment: names from `voxid.augment.OFFLINE_AUGMENTATIONS` (or chains of them joined
        by ``+``, `voxid.augment.offline_augmentation`), applied to training files.
    speaker_augment: augmentations whose copies become new speakers, ``<speaker>@<name>``
        (speed perturbation changes the voice: WeSpeaker's and 3D-Speaker's speaker
        augmentation), applied to training files.
    noise_dir: recordings for the `noise_real` augmentation.
    oversample: copy training items of minority speakers (or members) until balanced.
    members: speaker spec of the members (authentication); balances members vs others.
    max_seconds: recordings longer than this are skipped (None: no limit).

    >>> cfg = PrepareConfig(chunk=ChunkConfig(seconds=2.0))
    >>> cfg.audio_config()["chunk"]["seconds"], cfg.feature.kind
    (2.0, 'logmel')
    """

    feature: FeatureConfig = field(default_factory=FeatureConfig.logmel)
    vad: VadConfig = field(default_factory=VadConfig)
    chunk: ChunkConfig | None = field(default_factory=ChunkConfig)
    normalize: str | None = None
    augment: tuple[str, ...] = ()
    speaker_augment: tuple[str, ...] = ()
    noise_dir: str | None = None
    oversample: bool = False
    members: str | None = None
    seed: int = 0
    max_seconds: float | None = 600.0
    min_speech_seconds: float = 0.1

    def __post_init__(self) -> None:
        # Bad VAD or chunk parameters must fail here, once, not as a skip of every file.
        rate = int(self.feature.sample_rate)
        probe = np.ones(rate // 10, dtype=np.float32)
        self.vad.segments(probe, rate)
        if self.chunk is not None:
            self.chunk.apply(probe, rate)
        self.augment = tuple(self.augment)
        self.speaker_augment = tuple(self.speaker_augment)
        both = set(self.augment) & set(self.speaker_augment)
        if both:
            raise ConfigError(
                f"speaker_augment: {sorted(both)[0]!r} is also in augment; a copy is either the "
                "same speaker or a new one"
            )
        require_positive("max_seconds", self.max_seconds, seconds=True, optional=True)
        if self.normalize not in (None, "peak", "rms"):
            raise ConfigError(f"normalize: must be None, 'peak' or 'rms', got {self.normalize!r}")
        if self.augment or self.speaker_augment:
            from voxid.augment import OFFLINE_AUGMENTATIONS, offline_augmentation

            asked = (*self.augment, *self.speaker_augment)
            unknown = [a for a in asked if offline_augmentation(a) is None]
            if unknown:
                raise ConfigError(
                    f"augment: unknown augmentation {unknown[0]!r}; choose from "
                    f"{', '.join(sorted(OFFLINE_AUGMENTATIONS))}, or join several with '+'"
                )
            if "noise_real" in asked and not self.noise_dir:
                raise ConfigError("augment: 'noise_real' needs --noise-dir")

    def audio_config(self) -> dict[str, Any]:
        """The audio side of the settings, as stored (and copied into checkpoints)."""
        return {
            "sample_rate": int(self.feature.sample_rate),
            "normalize": self.normalize,
            "vad": self.vad.to_dict(),
            "chunk": self.chunk.to_dict() if self.chunk is not None else None,
        }

    def worker_settings(self) -> dict[str, Any]:
        """Plain-type settings for the worker processes."""
        return {
            "feature": self.feature.to_dict(),
            "normalize": self.normalize,
            "vad": self.vad.to_dict(),
            "chunk": self.chunk.to_dict() if self.chunk is not None else None,
            "noise_dir": str(self.noise_dir) if self.noise_dir else None,
            "seed": int(self.seed),
            "max_seconds": self.max_seconds,
            "min_samples": max(1, round(self.min_speech_seconds * self.feature.sample_rate)),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything that shapes the store's content (goes into the fingerprint)."""
        return {
            **self.worker_settings(),
            "augment": list(self.augment),
            **({"speaker_augment": list(self.speaker_augment)} if self.speaker_augment else {}),
            "oversample": self.oversample,
            "members": self.members,
        }


@dataclass
class PrepareReport:
    """What `prepare` did: counts, hours of audio, and each skipped input with its reason."""

    out_path: Path
    files: int = 0
    files_used: int = 0
    items: int = 0
    items_per_split: dict[str, int] = field(default_factory=dict)
    augmented: int = 0
    oversampled: int = 0
    seconds: float = 0.0
    kept_seconds: float = 0.0
    unassigned: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    fingerprint: str = ""

    @property
    def hours(self) -> float:
        """Hours of decoded audio in the files used."""
        return self.seconds / 3600.0

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio prepared per second of wall time."""
        return self.seconds / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-type summary (stored in the HDF5 attributes and printed by `--json`)."""
        return {
            "out_path": str(self.out_path),
            "files": self.files,
            "files_used": self.files_used,
            "items": self.items,
            "items_per_split": self.items_per_split,
            "augmented": self.augmented,
            "oversampled": self.oversampled,
            "hours": round(self.hours, 4),
            "kept_hours": round(self.kept_seconds / 3600.0, 4),
            "unassigned": self.unassigned,
            "elapsed_s": round(self.elapsed, 3),
            "realtime_factor": round(self.realtime_factor, 1),
            "fingerprint": self.fingerprint,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def prepare(
    corpus,
    out_path,
    config: PrepareConfig | None = None,
    workers: int = 2,
    progress=None,
    *,
    force: bool = False,
) -> PrepareReport:
    """Decode, VAD, chunk and featurise `corpus` into an HDF5 store at `out_path`.

    Items need a split (see `voxid.data.splits.assign_splits`); files without one are left
    out and counted. Bad files are skipped and listed in the report. The store is written
    to a temporary file next to `out_path` and renamed at the end, so an interrupted run
    leaves neither a half-written store nor a damaged previous one (the temporary files of
    runs killed outright, whose process is gone, are removed by the next run into that
    folder). `progress(done, total)` is called after each file. An existing voxid store
    at `out_path` is replaced; any other existing file raises DataError unless
    `force=True`.
    """
    return run_prepare(
        corpus, Path(out_path), config or PrepareConfig(), workers, progress, force=force
    )


# The driver of `prepare`: a process pool over files, ordered writing, atomic rename.

_PARTIAL = re.compile(r"^\..+\.(\d+)\.partial$")  # .<store name>.<pid>.partial
_FLUSH_BYTES = 16 << 20  # write features to HDF5 in blocks of about this size
_CHUNK_BYTES = 256 << 10


@contextlib.contextmanager
def _interruptible():
    """SIGINT and SIGTERM unwind the run, so the temporary file is removed on Ctrl-C or
    `kill`. The signal is also recorded, and the caller checks it after every file: a
    KeyboardInterrupt raised inside a C callback (soundfile's virtual I/O) is swallowed
    there, and the run would otherwise carry on."""
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return

    def _raise(signum, frame):
        hits.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield hits
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _results(jobs: list[FileJob], settings: dict, workers: int):
    """Yield FileResults in job order, whichever worker finished first."""
    if workers <= 1 or len(jobs) < 2:
        import torch

        threads = torch.get_num_threads()
        init_worker(settings, ignore_sigint=False)
        try:
            yield from map(process_file, jobs)
        finally:
            torch.set_num_threads(threads)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    chunksize = max(1, min(32, len(jobs) // (workers * 8)))
    with ctx.Pool(workers, initializer=init_worker, initargs=(settings,)) as pool:
        yield from pool.imap(process_file, jobs, chunksize=chunksize)


class _Writer:
    """Appends item features to the flat `data` dataset in large blocks."""

    def __init__(self, h5, compression: str | None = "lzf"):
        self.h5, self.compression = h5, compression
        self.ds: Any = None  # the h5py dataset, created with the first item
        self.tail: tuple[int, ...] = ()
        self.rows = 0
        self.buffer: list[np.ndarray] = []
        self.buffered = 0

    def add(self, x: np.ndarray) -> tuple[int, int]:
        if self.ds is None:
            tail = x.shape[1:]
            row_bytes = 4 * int(np.prod(tail, dtype=np.int64)) if tail else 4
            rows = max(1, _CHUNK_BYTES // row_bytes)
            self.ds = self.h5.create_dataset(
                "data",
                shape=(0, *tail),
                maxshape=(None, *tail),
                dtype="float32",
                chunks=(rows, *tail),
                compression=self.compression,
                track_times=False,
            )
            self.tail = tuple(tail)
        elif x.shape[1:] != self.tail:
            raise DataError(f"features: item shape {x.shape} does not match {self.tail}")
        start = self.rows + self.buffered
        self.buffer.append(x)
        self.buffered += x.shape[0]
        if self.buffered * x[:1].nbytes >= _FLUSH_BYTES:
            self.flush()
        return start, x.shape[0]

    def flush(self) -> None:
        if not self.buffer:
            return
        block = np.concatenate(self.buffer)
        self.ds.resize(self.rows + block.shape[0], axis=0)
        self.ds[self.rows :] = block
        self.rows += block.shape[0]
        self.buffer, self.buffered = [], 0


def _oversample(
    rows: list[dict], members: SpeakerSpec | None, speakers: list[str], seed: int
) -> list[dict]:
    """Copies of training items (augmented ones first) until the classes are balanced."""
    rng = np.random.default_rng(seed)
    train = [r for r in rows if r["split"] == "train"]
    if members is not None:
        group = {lab: members.matches(name) for lab, name in enumerate(speakers)}
        pools = {
            True: [r for r in train if group[r["label"]]],
            False: [r for r in train if not group[r["label"]]],
        }
    else:
        pools = {}
        for r in train:
            pools.setdefault(r["label"], []).append(r)
    if len(pools) < 2 or not all(pools.values()):
        return []
    target = max(len(p) for p in pools.values())
    copies = []
    for key in sorted(pools, key=str):
        pool = pools[key]
        aug = [r for r in pool if r["augment"]]
        source = aug or pool
        order = rng.permutation(len(source))
        for k in range(target - len(pool)):
            r = source[order[k % len(source)]]
            copies.append({**r, "copy": 1 + k // len(source)})
    return copies


def _write_items(h5, rows: list[dict], extra_cols: list[str]) -> None:
    import h5py

    str_t = h5py.string_dtype()
    kw = {"compression": "gzip", "track_times": False} if rows else {"track_times": False}
    h5.create_dataset("offsets", data=np.array([r["offset"] for r in rows], np.int64), **kw)
    h5.create_dataset("lengths", data=np.array([r["length"] for r in rows], np.int64), **kw)
    g = h5.create_group("items", track_order=True)
    numeric = {"label": np.int32, "chunk_index": np.int32, "seconds": np.float32, "copy": np.int16}
    for name, dt in numeric.items():
        g.create_dataset(name, data=np.array([r[name] for r in rows], dt), **kw)
    for name in ("split", "source", "augment"):
        g.create_dataset(name, data=np.array([r[name] for r in rows], dtype=str_t), **kw)
    e = h5.create_group("extra", track_order=True)
    for col in extra_cols:
        e.create_dataset(
            col, data=np.array([r["extra"].get(col, "") for r in rows], dtype=str_t), **kw
        )


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (whose temporary files must stay)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # no such pid can exist
        return False
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporary files (`.<name>.<pid>.partial`) that runs killed beyond cleaning
    up (SIGKILL, power loss) left in `folder`; those of running processes stay. Returns
    what was removed."""
    removed = []
    for entry in os.scandir(folder):
        m = _PARTIAL.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False) or pid_alive(int(m[1])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another prepare removed it first
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_voxid_store(path: Path) -> bool:
    import h5py

    if not path.is_file():  # a FIFO or device would block or be read for ever
        return False
    try:
        with h5py.File(path, "r") as f:
            return "voxid_store" in f.attrs
    except OSError:
        return False


def run_prepare(
    corpus, out: Path, cfg: PrepareConfig, workers: int, progress, force: bool = False
) -> PrepareReport:
    """Implementation of `prepare`."""
    import h5py

    start = time.perf_counter()
    if out.is_dir():
        raise DataError(f"{out}: is a folder, expected a .h5 file path")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: output folder does not exist")
    # A mistyped -o can name a recording of the corpus itself: only an earlier store is
    # replaced without asking.
    if not force and (out.exists() or out.is_symlink()) and not _is_voxid_store(out):
        raise DataError(
            f"{out}: exists and is not a voxid store; refusing to replace it "
            "(choose another output, or --force / force=True)"
        )
    items = [it for it in corpus.items if it.split is not None]
    report = PrepareReport(out, unassigned=len(corpus) - len(items), skipped=list(corpus.skipped))
    if not items:
        raise DataError(
            f"{corpus.name}: no file has a split (assign_splits first, or check the split rule)"
        )
    speakers = sorted({it.speaker for it in items})
    trained = sorted({it.speaker for it in items if it.split == "train"})
    # Speaker augmentation: each copy of a training speaker is a class of its own.
    speakers += [f"{s}@{name}" for name in cfg.speaker_augment for s in trained]
    label_of = {s: i for i, s in enumerate(speakers)}
    members = SpeakerSpec.parse(cfg.members) if cfg.members else None
    extra_cols = sorted({k for it in items for k in it.extra})
    jobs = [
        FileJob(
            i, str(it.path), (*cfg.augment, *cfg.speaker_augment) if it.split == "train" else ()
        )
        for i, it in enumerate(items)
    ]
    report.files = len(jobs)
    settings = cfg.worker_settings()
    remove_stale_partials(out.parent)
    fp = hashlib.sha256(
        json.dumps({"v": FORMAT_VERSION, "cfg": cfg.to_dict()}, sort_keys=True).encode()
    )
    rows: list[dict] = []
    results = None

    def write(tmp: Path) -> None:
        nonlocal results
        try:
            with _interruptible() as signals, h5py.File(tmp, "w", track_order=True) as h5:
                writer = _Writer(h5)
                res: FileResult
                results = _results(jobs, settings, workers)
                for done, res in enumerate(results, start=1):
                    it = items[res.index]
                    if res.error is not None:
                        report.skipped.append((str(it.path), res.error))
                    else:
                        report.files_used += 1
                        report.seconds += res.seconds
                        report.kept_seconds += res.kept_seconds
                        fp.update(
                            json.dumps(
                                [it.speaker, it.split, it.path.name, res.digest, it.extra],
                                sort_keys=True,
                            ).encode()
                        )
                        for tag, idx, feats, secs in res.items:
                            off, n = writer.add(feats)
                            rows.append(
                                {
                                    "offset": off,
                                    "length": n,
                                    "label": label_of[
                                        f"{it.speaker}@{tag}"
                                        if tag in cfg.speaker_augment
                                        else it.speaker
                                    ],
                                    "split": it.split,
                                    "source": str(it.path),
                                    "augment": tag,
                                    "chunk_index": idx,
                                    "seconds": secs,
                                    "copy": 0,
                                    "extra": it.extra,
                                }
                            )
                    if progress is not None:
                        progress(done, len(jobs))
                    if signals:
                        raise KeyboardInterrupt(f"signal {signals[0]}")
                results.close()
                writer.flush()
                if not rows:
                    raise DataError(
                        f"{corpus.name}: no usable audio ({len(report.skipped)} files skipped)"
                    )
                if cfg.oversample:
                    copies = _oversample(rows, members, speakers, cfg.seed)
                    report.oversampled = len(copies)
                    rows.extend(copies)
                _write_items(h5, rows, extra_cols)
                report.items = len(rows)
                report.items_per_split = dict(sorted(Counter(r["split"] for r in rows).items()))
                report.augmented = sum(1 for r in rows if r["augment"] and not r["copy"])
                report.fingerprint = fp.hexdigest()
                report.elapsed = time.perf_counter() - start
                member_names = [s for s in speakers if members.matches(s)] if members else []
                attrs = {
                    "speakers": speakers,
                    "feature_config": cfg.feature.to_dict(),
                    "audio_config": cfg.audio_config(),
                    "members": member_names,
                    "prepare_config": cfg.to_dict(),
                    "report": report.to_dict(),
                }
                for k, v in attrs.items():
                    h5.attrs[k] = json.dumps(v)
                h5.attrs["fingerprint"] = report.fingerprint
                h5.attrs["voxid_store"] = FORMAT_VERSION
        except BaseException:
            if results is not None:
                results.close()  # stops the worker pool before the file goes
            raise

    # The pid in the name lets `remove_stale_partials` tell a killed run's leftovers.
    atomic_write(out, write, tmp=out.parent / f".{out.name}.{os.getpid()}.partial")
    report.elapsed = time.perf_counter() - start
    return report
