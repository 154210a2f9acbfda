"""Who spoke when: VAD -> sliding windows -> batched embeddings -> clustering -> turns.

The recording streams through in blocks (`block_s`, 60 s by default): each block is
decoded, its speech found with the VAD, and the model's chunks (1 s for the base model,
every `grid_s`) that hold enough speech are embedded in one batch by the model's backend
(the recogniser's own embedding path; a chunk's speech is joined and filled to the chunk
length as `voxid.inference.backends.speech_chunks` fills short speech). The windows
(`window_s` long, every `hop_s`) are then built from the chunks they hold, each the mean of
their unit embeddings, as the recogniser averages a file's chunks: a chunk is embedded once
however many windows overlap it. A model without a chunk length (or lengths that are not
whole chunks) embeds each window on its own. Only the embeddings (192 floats a chunk:
7,200 for an hour on the 0.5-s grid) and a speech mask of 50-ms frames are kept, so memory
does not grow with the audio.

The speaker count, when not given, is estimated on these windows and on longer ones
(`count_window_s`, 3 s every 1 s, built from the same chunks): the trimmed mean of several
eigengap counts (`voxid.diarization.cluster.estimate_speakers`). For a model with an LDA
projection (the base model), the count is made on the encoder's own embeddings, recovered
from the projected ones (`count_on`; chosen on the tuning conversations), while clustering
into that count and assigning frames is better on the projected ones.

The window embeddings are then clustered (`voxid.diarization.cluster`), and every speech
frame is given to the speaker whose centroid the windows covering it (Hann-weighted to
their centres) are most similar to: turn boundaries fall between window centres, not on
the 0.5-s grid. Turns shorter than `min_turn_s` are given to a neighbouring turn.

Overlapped speech is not separated: each frame has one speaker, the one whose voice
dominates the windows around it; the other voice's share of the overlap is missed speech.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voxid.diarization.cluster import METHODS, cluster_embeddings
from voxid.diarization.rttm import ANONYMOUS, Diarization, Segment, SpeakerSummary
from voxid.diarization.source import blocks
from voxid.errors import ConfigError, require_positive
from voxid.inference.backends import speech_chunks
from voxid.inference.registry import mean_embedding
from voxid.inference.scoring import as_norm
from voxid.numeric import normalize_rows
from voxid.vad import VadConfig

__all__ = [
    "DiarizationConfig",
    "Embedder",
    "Windows",
    "centroid_namer",
    "diarize",
    "diarize_windows",
    "embed_windows",
]

#: A function naming clusters: centroids `(K, D)` -> one `(name or None, score or None)` each.
Namer = Callable[[np.ndarray], Sequence[tuple[str | None, float | None]]]


class Embedder(Protocol):
    """What the pipeline needs from a model: its rate and unit embeddings of windows."""

    sample_rate: int

    def embed(self, chunks: np.ndarray) -> np.ndarray:
        """Unit embeddings `(B, D)` of equal-length waveforms `(B, samples)`."""
        ...


#: What `DiarizationConfig.count_on` may name: the embeddings the speaker count is made on.
COUNT_ON = ("encoder", "model")


@dataclass(frozen=True)
class DiarizationConfig:
    """Settings of the pipeline (the defaults are the ones calibrated in
    `bench/bench_diarize.py` on tuning speakers disjoint from the evaluation ones).

    Arguments:
        window_s, hop_s: embedding window length and step.
        min_speech: fraction of a window that must be speech for it to be embedded.
        frame_s: time resolution of the speech mask and of the turn boundaries.
        block_s: seconds of audio decoded and embedded at a time.
        method, threshold, pval, min_neighbours, merge_cosine, min_size, center, refine,
            overcluster: clustering
            (`voxid.diarization.cluster.cluster_embeddings`).
        max_speakers: the most speakers an estimated count may reach.
        min_turn_s: turns shorter than this are given to a neighbouring turn.
        merge_score: clusters whose centroids score at least this against each other
            (cosine, AS-normed with the model's cohort: the scale of its verification
            threshold) are merged; None: no such merge.
        vad: the speech detector; None uses the model's (as it was trained).
        speech_threshold: the Silero VAD's speech probability threshold here (None: the
            detector's own; the energy VAD ignores it). Lower than the recogniser's 0.5:
            the quiet onsets and ends of turns count as speech, which DER scores (tuning
            set: missed speech 3.5 -> 1.8 %, false alarm 0.1 -> 0.5 %).
        count_window_s, count_hop_s: longer windows embedded only for the speaker count
            (None, or blocks shorter than twice them: count on the clustering windows).
        count_neighbours: the neighbour counts whose eigengap counts are averaged into
            the speaker count (None: one eigengap, `min_neighbours`).
        model_chunks: embed a window as the recogniser embeds a recording, the mean of
            its chunks of the model's training length (1 s for the base model), rather
            than in one piece.
        grid_s: with `model_chunks`, embed the model's chunks once, every `grid_s`
            seconds, and build every window (the clustering's and the count's) as the
            mean of the chunks it holds: each chunk is embedded once however many windows
            overlap it. None, or lengths and hops that are not whole numbers of chunks and
            grid steps: each window is embedded on its own.
        count_trim: the fraction of the eigengap counts dropped at each end before they
            are averaged into the speaker count (an affinity whose gap lands on the
            largest count allowed should not drag the mean).
        count_on: "encoder" counts the speakers on the encoder's own embeddings, before
            the model's LDA projection (recovered exactly from the projected ones,
            `Backend.unproject`), and clusters the projected ones into that many; "model"
            counts on the projected ones. The LDA, fitted to separate the training
            speakers, whitens directions in which unfamiliar voices differ little
            (bench_diarize: count exact 76 -> 81 % and 79 -> 80 % on two draws of tuning
            conversations; on the evaluation ones the two counts differ by less than two
            draws of them do). A model without such a projection counts on its embeddings
            either way.
    """

    window_s: float = 2.0
    hop_s: float = 0.5
    min_speech: float = 0.5
    frame_s: float = 0.05
    block_s: float = 60.0
    method: str = "spectral"
    threshold: float = 0.5
    pval: float | None = 0.05
    min_neighbours: int = 15
    merge_cosine: float = 1.01
    min_size: int = 2
    center: bool = False
    refine: int = 0
    merge_score: float | None = None
    overcluster: int = 0
    max_speakers: int = 8
    min_turn_s: float = 0.5
    vad: VadConfig | None = None
    speech_threshold: float | None = 0.3
    model_chunks: bool = True
    count_window_s: float | None = 3.0
    count_hop_s: float = 1.0
    count_neighbours: tuple[int, ...] | None = (8, 10, 12, 16)
    grid_s: float | None = 0.5
    count_trim: float = 0.125
    count_on: str = "encoder"

    def __post_init__(self) -> None:
        for key in ("window_s", "hop_s", "frame_s", "block_s"):
            require_positive(key, getattr(self, key), seconds=True)
        if self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s: must not exceed window_s ({self.window_s}), got {self.hop_s}"
            )
        if self.block_s < 2 * self.window_s:
            raise ConfigError(f"block_s: must be at least twice window_s, got {self.block_s}")
        if self.count_window_s is not None:
            for key in ("count_window_s", "count_hop_s"):
                require_positive(key, getattr(self, key), seconds=True)
            if self.count_hop_s > self.count_window_s:
                raise ConfigError(
                    f"count_hop_s: must not exceed count_window_s ({self.count_window_s}), "
                    f"got {self.count_hop_s}"
                )
        if self.count_neighbours is not None and (
            not self.count_neighbours
            or not all(isinstance(k, int) and k >= 1 for k in self.count_neighbours)
        ):
            raise ConfigError(
                f"count_neighbours: must be positive integers, got {self.count_neighbours!r}"
            )
        require_positive("grid_s", self.grid_s, seconds=True, optional=True)
        if self.count_on not in COUNT_ON:
            raise ConfigError(f"count_on: must be one of {COUNT_ON}, got {self.count_on!r}")
        if not 0 <= self.count_trim < 0.5:
            raise ConfigError(f"count_trim: must be in [0, 0.5), got {self.count_trim!r}")
        if self.speech_threshold is not None and not (
            isinstance(self.speech_threshold, (int, float)) and 0 < self.speech_threshold < 1
        ):
            raise ConfigError(
                f"speech_threshold: must be a probability in (0, 1), got {self.speech_threshold!r}"
            )
        if not 0 <= self.min_speech <= 1:
            raise ConfigError(f"min_speech: must be in [0, 1], got {self.min_speech!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method: must be one of {METHODS}, got {self.method!r}")
        require_positive("max_speakers", self.max_speakers, integer=True)

    def replace(self, **changes: Any) -> DiarizationConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _normalize(chunks: np.ndarray, how: str | None) -> np.ndarray:
    if how == "peak":
        return chunks / np.maximum(np.abs(chunks).max(axis=1, keepdims=True), 1e-9)
    if how == "rms":
        rms = np.sqrt(np.mean(chunks.astype(np.float64) ** 2, axis=1, keepdims=True))
        return (chunks * (0.1 / np.maximum(rms, 1e-9))).astype(np.float32)
    return chunks


class _Collector:
    """Streams blocks in; keeps the speech mask and the window embeddings."""

    def __init__(
        self,
        embedder: Embedder,
        cfg: DiarizationConfig,
        vad: VadConfig,
        shared: _Collector | None = None,
    ) -> None:
        sr = embedder.sample_rate
        #: A collector fed the same blocks first, whose speech mask this one reuses.
        self.shared = shared
        self.embedder, self.cfg, self.vad, self.sr = embedder, cfg, vad, sr
        self.normalize = getattr(embedder, "normalize", None)
        self.frame = max(1, round(cfg.frame_s * sr))
        self.win = max(1, round(cfg.window_s * sr))
        self.hop = max(1, round(cfg.hop_s * sr))
        self.masks: list[np.ndarray] = []
        self.mask_frames = 0
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # sample index of buf[0]
        self.next_start = 0  # next window start
        self.starts: list[int] = []
        self.embs: list[np.ndarray] = []
        self.total = 0

    def _mark(self, offset: int, block: np.ndarray) -> None:
        """Extend the frame mask over `block` (which starts at sample `offset`)."""
        if self.shared is not None:  # the same audio and frames: the VAD runs once
            self.masks = [self.shared._mask_view()]
            self.mask_frames = self.shared.mask_frames
            return
        end_frame = (offset + block.size) // self.frame
        if end_frame <= self.mask_frames:
            return
        mask = np.zeros(end_frame - self.mask_frames, bool)
        base = self.mask_frames * self.frame
        # The block is re-read from where the mask stops (frames straddle block ends).
        lo = base - self.buf_start
        audio = self.buf[lo : lo + (end_frame - self.mask_frames) * self.frame]
        for a, b in self.vad.segments(audio, self.sr) if audio.size and np.any(audio) else []:
            mask[a // self.frame : -(-b // self.frame)] = True
        self.masks.append(mask)
        self.mask_frames = end_frame

    def _speech(self, start: int, end: int) -> np.ndarray:
        mask = self._mask_view()
        return mask[start // self.frame : -(-end // self.frame)]

    def _mask_view(self) -> np.ndarray:
        if len(self.masks) > 1:
            self.masks = [np.concatenate(self.masks)]
        return self.masks[0] if self.masks else np.zeros(0, bool)

    def _window(self, start: int, end: int) -> np.ndarray | None:
        """The speech of `[start, end)` filled to a window, or None with too little."""
        speech = self._speech(start, end)
        if not speech.size or speech.mean() < self.cfg.min_speech or not speech.any():
            return None
        audio = self.buf[start - self.buf_start : end - self.buf_start]
        keep = np.repeat(speech, self.frame)[: audio.size]
        voiced = audio[keep[: audio.size]] if keep.size == audio.size else audio
        return np.resize(voiced, self.win).astype(np.float32)

    def _embed(self, starts: list[int], chunks: list[np.ndarray]) -> None:
        if not chunks:
            return
        batch = _normalize(np.stack(chunks), self.normalize)
        seconds = getattr(self.embedder, "chunk_seconds", None)
        if seconds is None or not self.cfg.model_chunks or seconds >= self.cfg.window_s:
            self.embs.append(np.asarray(self.embedder.embed(batch), np.float32))
        else:
            # As the recogniser embeds a recording: training-length chunks of the window
            # (`speech_chunks`, no VAD: the window is speech already), one batch, the mean
            # of the unit chunk embeddings.
            off = VadConfig(enabled=False)
            parts = [speech_chunks(w, self.sr, off, seconds) for w in batch]
            embs = self.embedder.embed(np.concatenate(parts))
            bounds = np.cumsum([0] + [len(p) for p in parts])
            self.embs.append(
                np.stack([mean_embedding(embs[a:b]) for a, b in itertools.pairwise(bounds)])
            )
        self.starts += starts

    def add(self, offset: int, block: np.ndarray) -> None:
        """Take the next block of audio (sample `offset` onwards)."""
        self.buf = np.concatenate([self.buf, block]) if self.buf.size else block
        self.total = offset + block.size
        self._mark(offset, block)
        end = self.mask_frames * self.frame
        starts, chunks = [], []
        while self.next_start + self.win <= end:
            chunk = self._window(self.next_start, self.next_start + self.win)
            if chunk is not None:
                starts.append(self.next_start)
                chunks.append(chunk)
            self.next_start += self.hop
        self._embed(starts, chunks)
        # Keep what later windows and the mask still need.
        keep_from = min(self.next_start, self.mask_frames * self.frame)
        self.buf = self.buf[keep_from - self.buf_start :]
        self.buf_start = keep_from

    def finish(self) -> None:
        """Mark the tail and embed a last window ending with the audio if speech is left."""
        tail = np.zeros(0, np.float32)
        if self.total > self.mask_frames * self.frame:
            pad = self.frame - (self.total - self.mask_frames * self.frame) % self.frame
            if pad < self.frame:
                tail = np.zeros(pad, np.float32)
                self.buf = np.concatenate([self.buf, tail])
                self._mark(self.total, tail)
        end = self.mask_frames * self.frame
        covered = self.starts[-1] + self.win if self.starts else 0
        left = self._speech(max(covered, self.next_start), end)
        if left.size and left.sum() * self.frame >= 0.25 * self.sr:
            start = max(self.buf_start, end - self.win)
            chunk = self._window(start, end)
            if chunk is None:  # mostly silence around a short utterance: use its speech
                speech = self._speech(start, end)
                audio = self.buf[start - self.buf_start : end - self.buf_start]
                chunk = np.resize(audio[np.repeat(speech, self.frame)[: audio.size]], self.win)
            self._embed([start], [chunk.astype(np.float32)])

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window starts (samples), their embeddings and the frame speech mask."""
        embs = np.concatenate(self.embs) if self.embs else np.zeros((0, 1), np.float32)
        return np.asarray(self.starts, int), embs, self._mask_view().copy()


def frame_scores(
    starts: np.ndarray, sims: np.ndarray, n_frames: int, frame: int, win: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame speaker scores `(F, K)`: the Hann-weighted mean of the similarities of the
    windows covering each frame, and the frames' total weight (0: no window covers it)."""
    per = max(1, -(-win // frame))
    weight = np.hanning(per + 2)[1:-1]
    scores = np.zeros((n_frames, sims.shape[1]))
    total = np.zeros(n_frames)
    for s, row in zip(starts // frame, sims, strict=True):
        idx = np.arange(s, min(s + per, n_frames))
        w = weight[: idx.size]
        scores[idx] += w[:, None] * row[None]
        total[idx] += w
    return scores / np.maximum(total, 1e-12)[:, None], total


def _runs(labels: np.ndarray) -> list[list[int]]:
    """[label, start, end) runs of equal values."""
    if not labels.size:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.r_[0, edges, labels.size]
    return [[int(labels[a]), int(a), int(b)] for a, b in itertools.pairwise(bounds)]


def smooth_turns(labels: np.ndarray, scores: np.ndarray, min_frames: int) -> np.ndarray:
    """Give speech runs shorter than `min_frames` to the neighbouring speaker they score
    higher against; -1 (no speech) frames are kept and separate nothing."""
    labels = labels.copy()
    speech = np.flatnonzero(labels >= 0)
    if speech.size == 0:
        return labels
    seq, sc = labels[speech], scores[speech]
    while True:
        runs = _runs(seq)
        if len(runs) < 2:
            break
        i = min(range(len(runs)), key=lambda r: runs[r][2] - runs[r][1])
        _, a, b = runs[i]
        if b - a >= min_frames:
            break
        options = [runs[j][0] for j in (i - 1, i + 1) if 0 <= j < len(runs)]
        best = max(options, key=lambda o: sc[a:b, o].mean())
        seq[a:b] = best
    labels[speech] = seq
    return labels


def _segments(labels: np.ndarray, frame_s: float) -> list[tuple[int, float, float]]:
    return [(lab, a * frame_s, b * frame_s) for lab, a, b in _runs(labels) if lab >= 0]


def centroid_namer(
    names: Sequence[str],
    refs: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    threshold: float,
) -> Namer | None:
    """A namer giving clusters the names of enrolled speakers their centroids score against
    (`score(samples, refs)`, e.g. the recogniser's AS-normed cosine) at `threshold` or more,
    one cluster per name: as many clusters named as the passing pairs allow, then the
    highest total score (an optimal assignment), so two clusters never share a name and a
    cluster outbid for its best match may take its next one. A cluster left unnamed reports
    its best score. None when nobody is enrolled.

    >>> refs = np.eye(2, dtype=np.float32)
    >>> namer = centroid_namer(["ann", "bob"], refs, lambda c, r: c @ r.T, 0.5)
    >>> [n for n, _ in namer(np.array([[1.0, 0.0], [0.9, 0.1], [0.6, 0.8]]))]
    ['ann', None, 'bob']
    >>> namer(np.zeros((0, 2)))
    []
    """
    if not len(names):
        return None
    from scipy.optimize import linear_sum_assignment

    def namer(centroids: np.ndarray) -> list[tuple[str | None, float | None]]:
        scores = np.asarray(score(normalize_rows(centroids, np.float32), refs), np.float64)
        if not scores.size:  # no clusters: nothing to name
            return [(None, None)] * len(scores)
        passing = scores >= threshold
        # A passing pair outweighs any sum of scores: first the most clusters named.
        weight = np.where(passing, scores - scores.min() + 1.0 + passing.size * np.ptp(scores), 0)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        chosen = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if passing[r, c]}
        return [
            (names[chosen[i]], float(row[chosen[i]])) if i in chosen else (None, float(row.max()))
            for i, row in enumerate(scores)
        ]

    return namer


def diarize(
    embedder: Embedder,
    audio: Any,
    *,
    sr: int | None = None,
    config: DiarizationConfig | None = None,
    num_speakers: int | None = None,
    max_speakers: int | None = None,
    namer: Namer | None = None,
    threshold: float | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Diarization:
    """Diarize `audio` (path, bytes, or array at `sr`) with `embedder`'s embeddings.

    Arguments:
        num_speakers: the known number of speakers (not estimated then).
        max_speakers: the most speakers to find (default: the config's).
        namer: names clusters (see `centroid_namer`); the others are SPEAKER_00, ...
        threshold: the threshold the namer decides with, reported in the result.
        on_progress: called with the seconds of audio processed after each block.
    """
    cfg = config or DiarizationConfig()
    if num_speakers is not None and max_speakers is not None:
        raise ConfigError("num_speakers and max_speakers: give one or the other, not both")
    require_positive("num_speakers", num_speakers, integer=True, optional=True)
    require_positive("max_speakers", max_speakers, integer=True, optional=True)
    windows = embed_windows(embedder, audio, sr=sr, config=cfg, on_progress=on_progress)
    return diarize_windows(
        windows, cfg, num_speakers=num_speakers, max_speakers=max_speakers, namer=namer,
        threshold=threshold,
    )  # fmt: skip


@dataclass
class Windows:
    """The embedded windows of one recording: what clustering needs, and nothing more.

    Arguments:
        starts: window start samples `(N,)`; embeddings: their unit embeddings `(N, D)`.
        mask: speech mask of frames of `frame` samples; win: window samples; sr: the rate;
        samples: length of the recording.
    """

    starts: np.ndarray
    embeddings: np.ndarray
    mask: np.ndarray
    frame: int
    win: int
    sr: int
    samples: int
    cohort: np.ndarray | None = None
    #: Embeddings of the longer windows the speaker count is estimated on too, or None.
    count_embeddings: np.ndarray | None = None
    #: The encoder's embeddings of the same windows (and count windows) before the model's
    #: LDA projection, which the speaker count is made on (`count_on`), or None.
    encoder_embeddings: np.ndarray | None = None
    encoder_count_embeddings: np.ndarray | None = None

    def pair_score(self, centroids: np.ndarray) -> np.ndarray:
        """Scores `(K, K)` between unit centroids as the model verifies: cosine, AS-normed
        against its cohort when it has one."""
        raw = centroids @ centroids.T
        if self.cohort is None:
            return raw
        return as_norm(raw, centroids, centroids, self.cohort)


def _stream(
    collectors: list[_Collector],
    audio: Any,
    sr: int | None,
    cfg: DiarizationConfig,
    on_progress: Callable[[float], None] | None,
) -> None:
    """Feed `audio`'s blocks to every collector in order (the first one runs the VAD),
    reporting progress after each block, then finish them."""
    rate = collectors[0].sr
    for offset, block in blocks(audio, rate, cfg.block_s, source_sr=sr):
        for col in collectors:
            col.add(offset, block)
        if on_progress is not None:
            on_progress((offset + block.size) / rate)
    for col in collectors:
        col.finish()


def embed_windows(
    embedder: Embedder,
    audio: Any,
    *,
    sr: int | None = None,
    config: DiarizationConfig | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Windows:
    """Stream `audio` through the VAD and the embedder in blocks (see the module doc)."""
    cfg = config or DiarizationConfig()
    rate = embedder.sample_rate
    vad = cfg.vad or getattr(embedder, "vad", None) or VadConfig()
    if cfg.speech_threshold is not None and vad.method == "silero":
        vad = dataclasses.replace(vad, threshold=cfg.speech_threshold)
    chunk_s = _grid_chunk(embedder, cfg)
    if chunk_s is not None:
        return _grid_windows(embedder, audio, sr, cfg, vad, chunk_s, on_progress)
    col = _Collector(embedder, cfg, vad)
    counter = None
    if (
        cfg.count_window_s is not None
        and cfg.count_neighbours
        and (2 * cfg.count_window_s <= cfg.block_s)
    ):
        long_cfg = cfg.replace(window_s=cfg.count_window_s, hop_s=cfg.count_hop_s)
        counter = _Collector(embedder, long_cfg, vad, shared=col)
    _stream([col] if counter is None else [col, counter], audio, sr, cfg, on_progress)
    starts, embs, mask = col.result()
    cohort = getattr(embedder, "cohort", None)
    extra = None if counter is None else counter.result()[1]
    # A window here is embedded whole or as the mean of its chunks; in the second case the
    # encoder's view of the mean stands for the mean of the encoder's views.
    raw = _encoder_view(embedder, embs, cfg)
    raw_extra = None if raw is None or extra is None else _encoder_view(embedder, extra, cfg)
    return Windows(
        starts, embs, mask, col.frame, col.win, rate, col.total, cohort, extra, raw, raw_extra
    )


def _encoder_view(
    embedder: Embedder, embs: np.ndarray, cfg: DiarizationConfig
) -> np.ndarray | None:
    """The encoder's embeddings behind `embs` when the count is made on them, else None."""
    unproject = getattr(embedder, "unproject", None)
    if cfg.count_on != "encoder" or unproject is None or embs.ndim != 2 or not len(embs):
        return None
    raw: np.ndarray | None = unproject(embs)
    return raw


def _whole(value: float, step: float) -> bool:
    return abs(value / step - round(value / step)) < 1e-6 and round(value / step) >= 1


def _grid_chunk(embedder: Embedder, cfg: DiarizationConfig) -> float | None:
    """The model's chunk length when the windows can be built from a chunk grid."""
    seconds = getattr(embedder, "chunk_seconds", None)
    if cfg.grid_s is None or not cfg.model_chunks or not seconds:
        return None
    lengths = [cfg.window_s] + ([cfg.count_window_s] if cfg.count_window_s else [])
    hops = [cfg.hop_s] + ([cfg.count_hop_s] if cfg.count_window_s else [])
    fits = all(_whole(w, seconds) for w in lengths) and all(_whole(h, cfg.grid_s) for h in hops)
    return float(seconds) if fits and _whole(seconds, cfg.grid_s) else None


def _compose(
    starts: np.ndarray, embs: np.ndarray, grid: int, chunk: int, win: int, hop: int, need: float
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `win` samples every `hop` from chunk embeddings on a `grid`: each the
    renormalised mean of the unit embeddings of its chunks (as the recogniser averages a
    recording's chunks), kept when at least `need` of its chunks had enough speech."""
    dim = embs.shape[1] if embs.ndim == 2 else 1
    if not len(starts):
        return np.zeros(0, int), np.zeros((0, dim), np.float32)
    unit = normalize_rows(embs, np.float64)
    at = {round(s / grid): i for i, s in enumerate(starts)}
    per, parts_n, step = chunk // grid, win // chunk, hop // grid
    out_starts, out = [], []
    for k in range(0, max(at) + 1, step):
        got = [at[k + j * per] for j in range(parts_n) if k + j * per in at]
        if got and len(got) >= need * parts_n:
            out_starts.append(k * grid)
            out.append(unit[got].mean(axis=0))
    if not out:
        return np.zeros(0, int), np.zeros((0, dim), np.float32)
    return np.asarray(out_starts, int), normalize_rows(np.stack(out), np.float32)


def _grid_windows(
    embedder: Embedder,
    audio: Any,
    sr: int | None,
    cfg: DiarizationConfig,
    vad: VadConfig,
    chunk_s: float,
    on_progress: Callable[[float], None] | None,
) -> Windows:
    """`embed_windows` on a chunk grid: the model's chunks every `grid_s`, streamed in
    blocks, then the clustering and count windows composed from them."""
    assert cfg.grid_s is not None
    rate = embedder.sample_rate
    col = _Collector(embedder, cfg.replace(window_s=chunk_s, hop_s=cfg.grid_s), vad)
    _stream([col], audio, sr, cfg, on_progress)
    cstarts, cembs, mask = col.result()
    grid, chunk = round(cfg.grid_s * rate), round(chunk_s * rate)
    win, hop = round(cfg.window_s * rate), round(cfg.hop_s * rate)
    # The encoder's view of each chunk (None: the count uses the model's), composed into
    # windows as the chunks are.
    craw = _encoder_view(embedder, cembs, cfg)
    need = cfg.min_speech
    starts, embs = _compose(cstarts, cembs, grid, chunk, win, hop, need)
    raw = None if craw is None else _compose(cstarts, craw, grid, chunk, win, hop, need)[1]
    extra = raw_extra = None
    if cfg.count_window_s is not None and cfg.count_neighbours:
        cwin, chop = round(cfg.count_window_s * rate), round(cfg.count_hop_s * rate)
        extra = _compose(cstarts, cembs, grid, chunk, cwin, chop, need)[1]
        if craw is not None:
            raw_extra = _compose(cstarts, craw, grid, chunk, cwin, chop, need)[1]
    cohort = getattr(embedder, "cohort", None)
    return Windows(
        starts, embs, mask, col.frame, win, rate, col.total, cohort, extra, raw, raw_extra
    )


def diarize_windows(
    windows: Windows,
    config: DiarizationConfig | None = None,
    *,
    num_speakers: int | None = None,
    max_speakers: int | None = None,
    namer: Namer | None = None,
    threshold: float | None = None,
) -> Diarization:
    """Cluster embedded windows into speakers and turns (see the module doc)."""
    cfg = config or DiarizationConfig()
    starts, embs, mask = windows.starts, windows.embeddings, windows.mask
    duration = windows.samples / windows.sr
    if not len(starts):
        return Diarization([], duration, [], threshold)
    options: dict[str, Any] = dict(
        max_speakers=max_speakers or cfg.max_speakers,
        method=cfg.method,
        threshold=cfg.threshold,
        pval=cfg.pval,
        merge_cosine=cfg.merge_cosine,
        min_size=cfg.min_size,
        center=cfg.center,
        refine=cfg.refine,
        overcluster=cfg.overcluster,
        min_neighbours=cfg.min_neighbours,
        count_neighbours=cfg.count_neighbours,
        count_trim=cfg.count_trim,
    )
    raw = windows.encoder_embeddings
    if num_speakers is None and raw is not None and len(raw) == len(embs):
        # Count on the encoder's embeddings (`count_on`); cluster the model's into as many.
        more = windows.encoder_count_embeddings
        counted = cluster_embeddings(
            raw, count_embeddings=None if more is None or len(more) < 3 else [more], **options
        )
        num_speakers = int(counted.max()) + 1
    labels = cluster_embeddings(
        embs,
        num_speakers=num_speakers,
        pair_score=None if cfg.merge_score is None else windows.pair_score,
        merge_score=np.inf if cfg.merge_score is None else cfg.merge_score,
        count_embeddings=None if windows.count_embeddings is None
        or len(windows.count_embeddings) < 3 else [windows.count_embeddings],
        **options,
    )  # fmt: skip
    k = int(labels.max()) + 1
    cents = normalize_rows(np.stack([embs[labels == c].mean(axis=0) for c in range(k)]), None)
    sims = normalize_rows(embs, None) @ cents.T
    scores, cover = frame_scores(starts, sims, mask.size, windows.frame, windows.win)
    frame_labels = np.where(mask, scores.argmax(axis=1), -1)
    # Speech no window covers (a short burst between silences) takes the nearest covered one.
    covered = np.flatnonzero(cover > 0)
    lonely = np.flatnonzero(mask & (cover == 0))
    if lonely.size and covered.size:
        pos = np.clip(np.searchsorted(covered, lonely), 0, covered.size - 1)
        prev = covered[np.maximum(pos - 1, 0)]
        nearest = np.where(
            np.abs(prev - lonely) < np.abs(covered[pos] - lonely), prev, covered[pos]
        )
        frame_labels[lonely] = frame_labels[nearest]
        scores[lonely] = scores[nearest]
    frame_labels = smooth_turns(frame_labels, scores, round(cfg.min_turn_s / cfg.frame_s))
    frame_s = windows.frame / windows.sr
    turns = _segments(frame_labels, frame_s)
    return _named(turns, cents, namer, threshold, duration)


def _named(
    turns: list[tuple[int, float, float]],
    cents: np.ndarray,
    namer: Namer | None,
    threshold: float | None,
    duration: float,
) -> Diarization:
    """Label clusters: registry names where they pass, SPEAKER_nn in order of appearance."""
    used = sorted(
        {lab for lab, _, _ in turns}, key=lambda c: next(a for lab, a, _ in turns if lab == c)
    )
    verdicts = list(namer(cents)) if namer is not None else [(None, None)] * len(cents)
    label: dict[int, str] = {}
    anonymous = 0
    for c in used:
        name, _ = verdicts[c]
        if name is None:
            name = ANONYMOUS.format(anonymous)
            anonymous += 1
        label[c] = name  # a namer may give two clusters one name: then one speaker
    segments = [
        Segment(a, b, label[c], verdicts[c][1] if verdicts[c][0] is not None else None)
        for c, a, b in turns
    ]
    speech: dict[str, float] = {}
    for s in segments:
        speech[s.speaker] = speech.get(s.speaker, 0.0) + s.duration
    summaries: dict[str, SpeakerSummary] = {}
    for c in used:
        name, score = verdicts[c]
        best = summaries.get(label[c])
        if best is None or (score is not None and (best.score is None or score > best.score)):
            summaries[label[c]] = SpeakerSummary(
                label[c], name is not None, score, speech[label[c]]
            )
    return Diarization(segments, duration, list(summaries.values()), threshold)
