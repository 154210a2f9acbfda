"""Real-time identification of who is speaking, from a microphone, a file or a WebSocket.

Audio arrives in small blocks; a sliding window (1.5 s, hopping every 0.5 s by default) is
cut from it, gated by the recogniser's own VAD policy (`voxid.vad.VadConfig`: Silero with
a level floor by default; a window with too little speech is "silence" and is never sent
to the model), identified, and smoothed by a majority vote over the last few
decisions so one odd window does not make the display flicker. Every decision carries its
stream time and its latency (from the arrival of the window's last sample to the decision).

The same `LiveIdentifier` serves `voxid listen` and the service's `/ws/live` endpoint.
"""

from __future__ import annotations

import queue
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxid.card import DEFAULT_SAMPLE_RATE
from voxid.errors import ConfigError

SILENCE = "silence"


@dataclass(frozen=True)
class StreamConfig:
    """Parameters of live identification.

    Arguments
    ---------
    window_s: length of the audio identified at each step.
    hop_s: time between two decisions.
    min_speech_ratio: a window whose VAD speech fraction is below this is "silence" (so is
        one with less speech than the recogniser needs, `MIN_SPEECH_SECONDS`). How quiet
        is too quiet is the VAD's level floor, not a separate limit here.
    smoothing: number of recent decisions in the majority vote (1 = no smoothing).
    top_k: candidates reported with each decision.

    >>> StreamConfig().window_s, StreamConfig(hop_s=0.25).hop_s
    (1.5, 0.25)
    """

    window_s: float = 1.5
    hop_s: float = 0.5
    min_speech_ratio: float = 0.3
    smoothing: int = 3
    top_k: int = 3

    def __post_init__(self) -> None:
        if not 0.2 <= self.window_s <= 30:
            raise ConfigError(f"window_s: must be in [0.2, 30] seconds, got {self.window_s}")
        if not 0.05 <= self.hop_s <= self.window_s:
            raise ConfigError(f"hop_s: must be in [0.05, window_s], got {self.hop_s}")
        if not 0 <= self.min_speech_ratio <= 1:
            raise ConfigError(f"min_speech_ratio: must be in [0, 1], got {self.min_speech_ratio}")
        if self.smoothing < 1:
            raise ConfigError(f"smoothing: must be at least 1, got {self.smoothing}")
        if self.top_k < 1:
            raise ConfigError(f"top_k: must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class Window:
    """A slice of the stream ready to identify: times in stream seconds."""

    t_start: float
    t_end: float
    samples: np.ndarray
    arrived: float  # time.perf_counter() when its last sample arrived


@dataclass(frozen=True)
class Decision:
    """Who is speaking in one window, after smoothing.

    `label` is a speaker name, "unknown" or "silence"; `raw_label` is the window's own
    answer before the vote. `confidence` (0-1) places the score on a scale where the
    acceptance threshold sits at 0.5, so a bar can show it directly.
    """

    t_start: float
    t_end: float
    label: str
    raw_label: str
    score: float | None
    threshold: float | None
    confidence: float
    speech_ratio: float
    rms_db: float
    latency_ms: float
    candidates: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (candidates as name/score objects)."""
        d = asdict(self)
        d["candidates"] = [{"name": n, "score": s} for n, s in self.candidates]
        return d

    def line(self) -> str:
        """One human-readable line, as `voxid listen` prints it."""
        score = f"{self.score:+.2f}" if self.score is not None else "  -  "
        return (
            f"{self.t_start:7.2f}-{self.t_end:7.2f}s  {self.label:<16} score {score}  "
            f"speech {self.speech_ratio:4.0%}  latency {self.latency_ms:6.1f} ms"
        )


class SlidingWindow:
    """Cut fixed windows with a fixed hop out of blocks of any size.

    >>> sw = SlidingWindow(16000, window_s=1.0, hop_s=0.5)
    >>> [round(w.t_end, 2) for w in sw.push(np.zeros(24000, np.float32))]
    [1.0, 1.5]
    """

    def __init__(self, sample_rate: int, window_s: float, hop_s: float) -> None:
        self.sample_rate = sample_rate
        self.window = round(window_s * sample_rate)
        self.hop = round(hop_s * sample_rate)
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # stream index of _buf[0]
        self._next_end = self.window  # stream index where the next window ends

    def push(self, samples: np.ndarray) -> list[Window]:
        """Append a block; return the windows it completes (oldest first)."""
        arrived = time.perf_counter()
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32).reshape(-1)])
        out = []
        while self._buf_start + self._buf.size >= self._next_end:
            start = self._next_end - self.window
            lo = start - self._buf_start
            out.append(
                Window(
                    start / self.sample_rate,
                    self._next_end / self.sample_rate,
                    self._buf[lo : lo + self.window].copy(),
                    arrived,
                )
            )
            self._next_end += self.hop
        # Keep only what the next window still needs.
        keep_from = self._next_end - self.window - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out


def _confidence(score: float, threshold: float, lo: float = -1.0, hi: float = 1.0) -> float:
    """Map a score in [lo, hi] (cosine by default) to 0-1 with the threshold at 0.5, linear
    on each side.

    >>> _confidence(0.5, 0.5), _confidence(1.0, 0.5), _confidence(4.9, 2.9, -1.1, 6.9)
    (0.5, 1.0, 0.75)
    """
    if score >= threshold:
        c = 0.5 + 0.5 * (score - threshold) / max(1e-6, hi - threshold)
    else:
        c = 0.5 * (score - lo) / max(1e-6, threshold - lo)
    return float(min(1.0, max(0.0, c)))


def speech_stats(wav: np.ndarray, sr: int, vad: Any = None) -> tuple[float, float]:
    """(speech ratio by the VAD policy `vad`, RMS level in dBFS) of a float waveform.

    `vad` is a `voxid.vad.VadConfig` (the default policy when None): pass the recogniser's
    (`vad_policy`), so the ratio is the share of the audio its model will hear.

    >>> from voxid.vad import VadConfig
    >>> speech_stats(np.full(8000, 1e-6, np.float32), 16000, VadConfig(method="energy"))
    (0.0, -120.0)
    """
    from voxid.vad import VadConfig

    if wav.size == 0:
        return 0.0, -120.0
    rms_db = float(20 * np.log10(max(float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))), 1e-6)))
    return float((vad or VadConfig()).speech_ratio(wav, sr)), rms_db


def vad_policy(recognizer: Any) -> Any:
    """The `VadConfig` a recogniser's model applies (the default policy when it has none)."""
    from voxid.vad import VadConfig

    vad = getattr(getattr(recognizer, "backend", None), "vad", None)
    return vad if isinstance(vad, VadConfig) else VadConfig()


class MajorityVote:
    """Smooth a stream of labels: the most frequent of the last `size`, ties to the newest.

    The score returned is the mean score of the winning label over those decisions.

    >>> vote = MajorityVote(3)
    >>> [vote.update(x, 0.9)[0] for x in ["bob", "eve", "bob", "eve", "eve", "silence"]]
    ['bob', 'eve', 'bob', 'eve', 'eve', 'eve']
    """

    def __init__(self, size: int = 3) -> None:
        self.recent: deque[tuple[str, float | None]] = deque(maxlen=max(1, size))

    def update(self, label: str, score: float | None) -> tuple[str, float | None]:
        """Add one raw decision; return the smoothed (label, score)."""
        self.recent.append((label, score))
        counts = Counter(lab for lab, _ in self.recent)
        best = max(counts.values())
        # Ties go to the most recent of the tied labels, so a real change shows up at once.
        winner = next(lab for lab, _ in reversed(self.recent) if counts[lab] == best)
        scores = [s for lab, s in self.recent if lab == winner and s is not None]
        return winner, (float(np.mean(scores)) if scores else None)


class LiveIdentifier:
    """Windowing, VAD gating, identification and smoothing over one audio stream.

    Arguments
    ---------
    recognizer: a `voxid.inference.recognizer.Recognizer` with enrolled speakers.
    config: the stream parameters.
    sample_rate: rate of the samples given to `push` (resampled to the model's rate).
    """

    def __init__(
        self,
        recognizer: Any,
        config: StreamConfig | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
    ) -> None:
        self.recognizer = recognizer
        self.config = config or StreamConfig()
        self.sample_rate = sample_rate
        self.windows = SlidingWindow(sample_rate, self.config.window_s, self.config.hop_s)
        self.vote = MajorityVote(self.config.smoothing)
        self.vad = vad_policy(recognizer)

    def push(self, samples: np.ndarray) -> list[Window]:
        """Add audio (float in [-1, 1] or int16 PCM); return the windows now complete."""
        samples = np.asarray(samples)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        return self.windows.push(samples)

    def decide(self, window: Window) -> Decision:
        """Identify one window (blocking: runs the model) and smooth the answer."""
        from voxid.inference.backends import MIN_SPEECH_SECONDS

        cfg = self.config
        ratio, rms_db = speech_stats(window.samples, self.sample_rate, self.vad)
        speech_s = ratio * window.samples.size / self.sample_rate
        score = None
        # Known even for a silent window, so a smoothed speaker label keeps its confidence.
        threshold = getattr(self.recognizer, "threshold", None)
        candidates: list[tuple[str, float]] = []
        if ratio < cfg.min_speech_ratio or speech_s < MIN_SPEECH_SECONDS:
            raw = SILENCE
        else:
            from voxid.audio import AudioError

            try:
                result = self.recognizer.identify(
                    window.samples, top_k=cfg.top_k, sr=self.sample_rate
                )
                raw, score, threshold, candidates = identification_summary(result)
            except AudioError:
                # The recognizer's own VAD found too little speech to embed: that is
                # silence for the listener, not an error.
                raw = SILENCE
        label, smoothed_score = self.vote.update(raw, score)
        conf = 0.0
        if smoothed_score is not None and threshold is not None:
            lo, hi = getattr(self.recognizer, "score_bounds", (-1.0, 1.0))
            conf = _confidence(smoothed_score, threshold, lo, hi)
        return Decision(
            window.t_start,
            window.t_end,
            label,
            raw,
            smoothed_score,
            threshold,
            conf,
            ratio,
            rms_db,
            (time.perf_counter() - window.arrived) * 1000.0,
            candidates,
        )

    def process(self, samples: np.ndarray) -> list[Decision]:
        """`push` then `decide` each completed window."""
        return [self.decide(w) for w in self.push(samples)]


def model_sample_rate(recognizer: Any) -> int:
    """The sample rate a recognizer's model expects (16 kHz when it does not say)."""
    return int(getattr(recognizer, "sample_rate", DEFAULT_SAMPLE_RATE))


def identification_summary(
    result: Any,
) -> tuple[str, float | None, float | None, list[tuple[str, float]]]:
    """(label, best score, threshold, [(name, score)...]) from a recognizer's Identification."""
    candidates = [(str(c.name), float(c.score)) for c in result.candidates]
    best = candidates[0][1] if candidates else None
    threshold = None if result.threshold is None else float(result.threshold)
    return str(result.name), best, threshold, candidates


# ----------------------------------------------------------------------------- sources


def file_blocks(
    path: str | Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    block_s: float = 0.1,
    realtime: bool = True,
) -> Generator[np.ndarray, None, None]:
    """Blocks of a file decoded at `sample_rate`, paced like a live microphone if `realtime`."""
    from voxid.audio import load_audio

    wav = load_audio(path, sr=sample_rate)
    block = max(1, round(block_s * sample_rate))
    start = time.perf_counter()
    for i in range(0, wav.size, block):
        if realtime:
            # Pace against the clock, not by sleeping block_s, so drift does not accumulate.
            delay = start + (i + block) / sample_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield wav[i : i + block]


def microphone_blocks(
    sample_rate: int = DEFAULT_SAMPLE_RATE, block_s: float = 0.1, device: int | str | None = None
) -> Generator[np.ndarray, None, None]:
    """Blocks from an input device (sounddevice); closing the generator stops the device."""
    from voxid.audio import AudioError

    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio library itself is missing
        raise AudioError(f"microphone: PortAudio is not available ({exc})") from None

    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def _callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        blocks.put(indata[:, 0].copy())

    try:
        stream = sd.InputStream(
            samplerate=sample_rate,
            channels=1,
            dtype="float32",
            blocksize=round(block_s * sample_rate),
            device=device,
            callback=_callback,
        )
    except (sd.PortAudioError, ValueError) as exc:
        name = "default input" if device is None else repr(device)
        raise AudioError(f"microphone ({name}): cannot open it ({exc})") from None
    with stream:
        while True:
            yield blocks.get()


def run_stream(
    identifier: LiveIdentifier,
    blocks: Iterator[np.ndarray],
    on_decision: Callable[[Decision], None],
) -> int:
    """Feed blocks to the identifier until they run out; return the number of decisions."""
    n = 0
    for block in blocks:
        for decision in identifier.process(block):
            on_decision(decision)
            n += 1
    return n
