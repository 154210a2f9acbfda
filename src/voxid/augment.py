"""Data augmentation: noise at a set SNR, speed perturbation, VTLP and SpecAugment.

Waveform augmentations are numpy functions drawing every random number from the
`numpy.random.Generator` they are given, so a seed reproduces them exactly; `SpecAugment`
is a torch module acting on features `(B, T, F)` in training mode only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr
import torch
from scipy.signal import istft, stft
from torch import nn

from voxid.errors import ConfigError, DataError

__all__ = ["NOISE_INTENSITIES", "OFFLINE_AUGMENTATIONS", "SPEAKER_WARPS", "NoiseBank",
           "SpecAugment", "add_gaussian_noise", "offline_augmentation", "pseudo_voices",
           "speed_perturb", "vtlp"]  # fmt: skip

#: Named Gaussian-noise intensities and their SNR in dB ("low" noise = high SNR).
NOISE_INTENSITIES = {"low": 20.0, "high": 5.0}
#: SNR range (dB) for real-noise mixing in `OFFLINE_AUGMENTATIONS["noise_real"]`.
REAL_NOISE_SNR = (5.0, 20.0)
#: VTLP warp factors are drawn uniformly from this range.
VTLP_RANGE = (0.9, 1.1)


def _mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ConfigError(f"wav: expected a 1-D mono array, got shape {wav.shape}")
    return wav


def _power(wav: np.ndarray) -> float:
    power = float(np.mean(wav.astype(np.float64) ** 2)) if wav.size else 0.0
    if power == 0.0:
        raise DataError("wav: all zeros, so a signal-to-noise ratio is undefined")
    return power


def _scale_to_snr(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    if not np.isfinite(snr_db):
        raise ConfigError(f"snr_db: must be finite, got {snr_db!r}")
    # Scale by the power of this very noise realisation, so the SNR is exact, not expected.
    gain = np.sqrt(_power(wav) / (_power(noise) * 10.0 ** (snr_db / 10.0)))
    return (wav + gain * noise).astype(np.float32)


def add_gaussian_noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at exactly `snr_db` (signal power over the whole clip).

    >>> wav = np.sin(np.arange(16000) / 4.0).astype("float32")
    >>> noisy = add_gaussian_noise(wav, 10.0, np.random.default_rng(0))
    >>> round(float(10 * np.log10(np.mean(wav**2) / np.mean((noisy - wav) ** 2))), 2)
    10.0
    """
    wav = _mono(wav)
    return _scale_to_snr(wav, np.random.default_rng(rng).standard_normal(wav.size), snr_db)


class NoiseBank:
    """Real noise recordings from a folder (any depth), mixed in at a random SNR.

    Files are decoded on first use at the rate asked for, then kept in memory.

    Arguments
    ---------
    folder: a folder holding noise recordings (any format `voxid.audio` reads).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        from voxid.audio import AUDIO_EXTENSIONS

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: noise folder not found")
        self.files = sorted(p for p in self.folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)  # fmt: skip
        if not self.files:
            raise DataError(f"{self.folder}: no audio files in the noise folder")
        self._cache: dict[int, list[np.ndarray]] = {}

    def noises(self, sr: int) -> list[np.ndarray]:
        """The recordings decoded at `sr` Hz (mono float32)."""
        if sr not in self._cache:
            from voxid.audio import load_audio

            self._cache[sr] = [load_audio(p, sr, max_seconds=None) for p in self.files]
        return self._cache[sr]

    def mix(self, wav: np.ndarray, snr_range: tuple[float, float], rng: np.random.Generator,
            sr: int = 16000) -> np.ndarray:  # fmt: skip
        """Mix a random excerpt of a random recording at an SNR uniform in `snr_range`.

        A recording shorter than `wav` is looped.
        """
        wav = _mono(wav)
        low, high = snr_range
        if not low <= high:
            raise ConfigError(f"snr_range: need low <= high, got {snr_range!r}")
        rng = np.random.default_rng(rng)
        noises = self.noises(sr)
        noise = noises[int(rng.integers(len(noises)))]
        start = int(rng.integers(noise.size))
        excerpt = np.take(noise, np.arange(start, start + wav.size), mode="wrap")
        return _scale_to_snr(wav, excerpt, float(rng.uniform(low, high)))


def speed_perturb(wav: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play `factor` times faster (tempo and pitch together): the length becomes n / factor.

    Done as Kaldi does, by resampling (soxr) as if the clip had been recorded at sr * factor.

    >>> speed_perturb(np.ones(16000, "float32"), 16000, 1.1).size
    14545
    """
    wav = _mono(wav)
    if not 0.5 <= factor <= 2.0:
        raise ConfigError(f"factor: speed factor must be in [0.5, 2], got {factor!r}")
    if factor == 1.0:
        return wav.copy()
    return soxr.resample(wav, sr * factor, sr, quality="HQ").astype(np.float32)


def _vtlp_warp(freqs: np.ndarray, alpha: float, sr: int, inverse: bool = False) -> np.ndarray:
    """The piecewise-linear warp of Jaitly & Hinton (2013), or its inverse.

    Frequencies are scaled by alpha up to a boundary, then follow a line to Nyquist, so the
    band edge stays put; the boundary is 4.8 kHz at 16 kHz, i.e. 0.3 sr in general.
    """
    nyquist = sr / 2
    boundary = 0.3 * sr * min(alpha, 1.0) / alpha
    slope = (nyquist - alpha * boundary) / (nyquist - boundary)
    if inverse:
        below = freqs <= alpha * boundary
        return np.where(below, freqs / alpha, nyquist - (nyquist - freqs) / slope)
    return np.where(freqs <= boundary, alpha * freqs, nyquist - slope * (nyquist - freqs))


def vtlp(wav: np.ndarray, sr: int, alpha: float, *, n_fft: int = 512) -> np.ndarray:
    """Vocal-tract length perturbation: warp the spectrum's frequency axis by `alpha`.

    A phase vocoder: each output STFT bin takes the magnitude found at the inversely
    warped frequency (linear interpolation) and the warped instantaneous frequency of the
    nearest source bin, whose phase is accumulated frame to frame; overlap-add resynthesis
    gives a signal of the input's length and power. alpha > 1 moves formants (and pitch) up.

    >>> wav = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype("float32")
    >>> out = vtlp(wav, 16000, 1.1)
    >>> int(np.fft.rfftfreq(out.size, 1 / 16000)[np.abs(np.fft.rfft(out)).argmax()])
    1100
    """
    wav = _mono(wav)
    if not 0.7 <= alpha <= 1.4:
        raise ConfigError(f"alpha: VTLP warp factor must be in [0.7, 1.4], got {alpha!r}")
    if wav.size == 0:
        return wav.copy()
    hop = n_fft // 4
    freqs, _, spec = stft(wav, sr, nperseg=n_fft, noverlap=n_fft - hop)
    source = _vtlp_warp(freqs, alpha, sr, inverse=True) / freqs[1]  # fractional bins
    low = np.clip(np.floor(source).astype(int), 0, freqs.size - 1)
    high = np.clip(low + 1, 0, freqs.size - 1)
    frac = (source - low)[:, None]
    magnitude = np.abs(spec)
    warped = (1.0 - frac) * magnitude[low] + frac * magnitude[high]
    # Compression piles energy into fewer bins (and stretching spreads it): keep the power.
    warped *= np.sqrt(np.sum(magnitude**2) / max(np.sum(warped**2), 1e-20))

    # Instantaneous frequency (Hz) of every source bin from its phase advance per hop.
    phase = np.angle(spec)
    expected = 2 * np.pi * freqs[:, None] * hop / sr
    deviation = np.diff(phase, axis=1) - expected
    deviation = (deviation + np.pi) % (2 * np.pi) - np.pi
    inst = freqs[:, None] + deviation * sr / (2 * np.pi * hop)
    nearest = np.clip(np.round(source).astype(int), 0, freqs.size - 1)
    advance = 2 * np.pi * _vtlp_warp(inst[nearest], alpha, sr) * hop / sr
    out_phase = np.concatenate([phase[nearest, :1], advance], axis=1).cumsum(axis=1)
    _, out = istft(warped * np.exp(1j * out_phase), sr, nperseg=n_fft,
                   noverlap=n_fft - hop)  # fmt: skip
    out = np.pad(out, (0, max(0, wav.size - out.size)))[: wav.size]
    return out.astype(np.float32)


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) on features `(B, T, F)`.

    Each of `n_freq` masks covers a width drawn uniformly from 0..`freq_mask` bins, each of
    `n_time` masks 0..`time_mask` frames (at most T), at a uniform position, separately for
    every item; masked cells take the item's mean (neutral for any feature scale). Identity
    in eval mode. Pass a `torch.Generator` to `forward` for reproducible masks.

    >>> aug = SpecAugment(freq_mask=8, time_mask=10, n_freq=2, n_time=2)
    >>> x = torch.randn(4, 100, 80)
    >>> aug(x).shape, torch.equal(aug.eval()(x), x)
    (torch.Size([4, 100, 80]), True)
    """

    def __init__(self, freq_mask: int = 8, time_mask: int = 10, n_freq: int = 2,
                 n_time: int = 2) -> None:  # fmt: skip
        super().__init__()
        for key, value in (("freq_mask", freq_mask), ("time_mask", time_mask),
                           ("n_freq", n_freq), ("n_time", n_time)):  # fmt: skip
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"SpecAugment.{key}: must be an integer >= 0, got {value!r}")
        self.freq_mask, self.time_mask = freq_mask, time_mask
        self.n_freq, self.n_time = n_freq, n_time

    @staticmethod
    def _masks(batch: int, size: int, width: int, count: int,
               generator: torch.Generator | None) -> torch.Tensor:  # fmt: skip
        """(batch, size) bool: True where any of `count` random bands falls."""
        positions = torch.arange(size)
        masked = torch.zeros(batch, size, dtype=torch.bool)
        width = min(width, size)
        for _ in range(count):
            w = torch.randint(0, width + 1, (batch,), generator=generator)
            start = (torch.rand(batch, generator=generator) * (size - w + 1)).long()
            masked |= (positions >= start[:, None]) & (positions < (start + w)[:, None])
        return masked

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask `x` (B, T, F) in training mode; return it unchanged in eval mode."""
        if not self.training or x.dim() != 3:
            return x
        b, t, f = x.shape
        freq = self._masks(b, f, self.freq_mask, self.n_freq, generator)[:, None, :]
        time = self._masks(b, t, self.time_mask, self.n_time, generator)[:, :, None]
        masked = (freq | time).to(x.device)
        return torch.where(masked, x.mean(dim=(1, 2), keepdim=True), x)


Augmentation = Callable[..., np.ndarray]
_BANKS: dict[str, NoiseBank] = {}


def _real_noise(wav: np.ndarray, sr: int, rng: np.random.Generator,
                noise_bank: NoiseBank | str | os.PathLike | None = None) -> np.ndarray:  # fmt: skip
    if noise_bank is None:
        raise ConfigError("noise_real: needs a noise folder (give a NoiseBank or its folder)")
    if not isinstance(noise_bank, NoiseBank):
        key = str(Path(noise_bank).resolve())
        noise_bank = _BANKS.setdefault(key, NoiseBank(key))
    return noise_bank.mix(wav, REAL_NOISE_SNR, rng, sr=sr)


def _gaussian(snr_db: float) -> Augmentation:
    def apply(wav, sr, rng, noise_bank=None):
        return add_gaussian_noise(wav, snr_db, rng)

    return apply


def _speed(factor: float) -> Augmentation:
    def apply(wav, sr, rng, noise_bank=None):
        return speed_perturb(wav, sr, factor)

    return apply


def _random_vtlp(wav, sr, rng, noise_bank=None):
    return vtlp(wav, sr, float(np.random.default_rng(rng).uniform(*VTLP_RANGE)))


def _fixed_vtlp(alpha: float) -> Augmentation:
    def apply(wav, sr, rng, noise_bank=None):
        return vtlp(wav, sr, alpha)

    return apply


#: Fixed warps for speaker augmentation (`voxid prepare --speaker-augment`): one factor per
#: copy, so every copy of a speaker is the same pseudo-voice. `speed_*` moves pitch and
#: formants together, `vtlp_*` the formants (vocal-tract length) alone.
SPEAKER_WARPS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4)


#: Offline augmentations for `voxid prepare --augment`: name -> fn(wav, sr, rng,
#: noise_bank=None) -> wav. "noise_real" needs `noise_bank` (a NoiseBank or a folder).
OFFLINE_AUGMENTATIONS: dict[str, Augmentation] = {
    "noise_low": _gaussian(NOISE_INTENSITIES["low"]),
    "noise_high": _gaussian(NOISE_INTENSITIES["high"]),
    "noise_real": _real_noise,
    "vtlp": _random_vtlp,
    **{f"speed_{f:g}": _speed(f) for f in SPEAKER_WARPS},
    **{f"vtlp_{f:g}": _fixed_vtlp(f) for f in SPEAKER_WARPS},
}


def offline_augmentation(name: str) -> Augmentation | None:
    """The offline augmentation `name` names, or None when it names none.

    Besides the names of `OFFLINE_AUGMENTATIONS`, a chain of them joined by ``+`` is one
    augmentation that applies each in turn: ``speed_0.8+vtlp_1.25`` lowers the pitch by 20 %
    and puts the formants back where they were, a pseudo-voice off the line that
    speed (pitch and formants together) and VTLP (formants alone) each walk along.

    >>> wav = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype("float32")
    >>> out = offline_augmentation("speed_0.8+vtlp_1.25")(wav, 16000, None)
    >>> int(np.fft.rfftfreq(out.size, 1 / 16000)[np.abs(np.fft.rfft(out)).argmax()])
    1000
    >>> offline_augmentation("speed_0.8+louder") is None
    True
    """
    parts = name.split("+")
    if any(part not in OFFLINE_AUGMENTATIONS for part in parts) or len(set(parts)) < len(parts):
        return None
    fns = [OFFLINE_AUGMENTATIONS[part] for part in parts]
    if len(fns) == 1:
        return fns[0]

    def chain(wav, sr, rng, noise_bank=None):
        for fn in fns:
            wav = fn(wav, sr, rng, noise_bank=noise_bank)
        return wav

    return chain


def pseudo_voices(labels: list[str]) -> np.ndarray:
    """Which of a model's classes are speaker-augmentation pseudo-voices, not people.

    `voxid prepare --speaker-augment` names each warped copy of a training speaker
    ``<speaker>@<augmentation>``: a class that only shapes the embedding space. Nobody
    can be one, so a closed set of the people enrolled leaves them out.
    """
    real = set(labels)

    def pseudo(label: str) -> bool:
        speaker, _, tag = label.rpartition("@")
        return bool(speaker) and speaker in real and offline_augmentation(tag) is not None

    return np.array([pseudo(str(label)) for label in labels], dtype=bool)
