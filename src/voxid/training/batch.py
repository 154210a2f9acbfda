"""From a collated batch to model inputs: frontend for waveform stores, augmentation.

Plain torch (no Lightning), so the training loop and the final evaluation prepare batches
the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from voxid.config import TrainConfig
from voxid.errors import ConfigError
from voxid.models.layers import length_mask


def add_noise(
    x: torch.Tensor, mask: torch.Tensor, snr: tuple[float, float], prob: float
) -> torch.Tensor:
    """Add Gaussian noise at an SNR drawn per example from `snr` (dB) to a share `prob`.

    The signal power is the variance of the valid (unpadded) part, so it applies to
    waveforms `(B, S)` and feature maps `(B, T, F)` alike; padding stays zero.

    >>> x = torch.randn(4, 1000)
    >>> noisy = add_noise(x, torch.ones(4, 1000, dtype=torch.bool), (20.0, 20.0), 1.0)
    >>> bool(abs(10 * torch.log10(x.var() / (noisy - x).var()) - 20) < 1)
    True
    """
    b = x.shape[0]
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim()))).expand_as(x).to(x.dtype)
    count = m.reshape(b, -1).sum(1).clamp(min=1)
    mean = (x * m).reshape(b, -1).sum(1) / count
    centred = (x - mean.reshape(b, *[1] * (x.dim() - 1))) * m
    power = centred.pow(2).reshape(b, -1).sum(1) / count
    snr_db = torch.empty(b, device=x.device).uniform_(snr[0], snr[1])
    std = torch.sqrt(power / 10 ** (snr_db / 10))
    chosen = (torch.rand(b, device=x.device) < prob).to(x.dtype)
    scale = (std * chosen).reshape(b, *[1] * (x.dim() - 1))
    return x + torch.randn_like(x) * scale * m


def narrowband(
    x: torch.Tensor, sr: int, cutoff: tuple[float, float], prob: float, ramp_hz: float = 200.0
) -> torch.Tensor:
    """Low-pass a share `prob` of the waveforms `(B, S)` at a cutoff drawn per example from
    `cutoff` (Hz), as a telephone line or an 8-kHz recording is: the spectrum falls to zero
    over `ramp_hz` (a raised-cosine edge, so no sharp ringing) and stays zero above.

    >>> sr, t = 16000, torch.arange(16000) / 16000
    >>> x = torch.sin(2 * torch.pi * 1000 * t) + torch.sin(2 * torch.pi * 6000 * t)
    >>> y = narrowband(x[None], sr, (3400.0, 3400.0), 1.0)[0]
    >>> spec = torch.fft.rfft(y).abs()
    >>> bool(spec[6000] < 1e-3 * spec[1000])
    True
    """
    b, size = x.shape
    chosen = torch.rand(b, device=x.device) < prob
    if not bool(chosen.any()):
        return x
    spec = torch.fft.rfft(x[chosen].float(), dim=1)
    freqs = torch.fft.rfftfreq(size, 1.0 / sr, device=x.device)
    cut = torch.empty(spec.shape[0], 1, device=x.device).uniform_(cutoff[0], cutoff[1])
    edge = ((freqs[None] - (cut - ramp_hz)) / ramp_hz).clamp(0.0, 1.0)
    gain = 0.5 * (1.0 + torch.cos(torch.pi * edge))
    out = x.clone()
    out[chosen] = torch.fft.irfft(spec * gain, n=size, dim=1).to(x.dtype)
    return out


class InputPipeline:
    """Turn `(x, lengths)` from `collate_pad` into `(features, frame_lengths)` for a model.

    Waveform batches go through `model.frontend` (in float32, also under mixed precision);
    training batches get the configured Gaussian noise and SpecAugment.

    Arguments:
        model: the `SpeakerModel`.
        cfg: the run's `TrainConfig` (its `augment` section).
        waveform: batches hold waveforms `(B, samples)` rather than features `(B, T, F)`.
    """

    def __init__(self, model: Any, cfg: TrainConfig, waveform: bool):
        self.model = model
        self.augment = cfg.augment
        self.waveform = waveform
        self.noise_bank = None
        if cfg.augment.real_noise_dir:
            if not waveform:
                raise ConfigError(
                    "augment.real_noise_dir: recordings are mixed into waveforms; train on a "
                    "waveform store (voxid prepare --features waveform)"
                )
            from voxid.augment import NoiseBank

            self.noise_bank = NoiseBank(cfg.augment.real_noise_dir)
            self.rng = np.random.default_rng(cfg.seed)
        self.spec_augment = None
        if cfg.augment.spec_augment:
            from voxid.augment import SpecAugment

            a = cfg.augment
            self.spec_augment = SpecAugment(a.freq_mask, a.time_mask, a.n_freq, a.n_time)

    def __call__(
        self, x: torch.Tensor, lengths: torch.Tensor | None, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model inputs and their valid frame counts (None for fixed-size images)."""
        if train and self.noise_bank is not None:
            x = self._mix_real_noise(x, lengths)
        if train and self.waveform and self.augment.narrowband_prob > 0:
            # After the room noise (it passes the same channel as the voice), before the
            # Gaussian noise (a recorder's own noise floor is wideband).
            low, high = self.augment.narrowband_hz
            sr = self.model.feature_config.sample_rate
            x = narrowband(x, sr, (float(low), float(high)), self.augment.narrowband_prob)
            if lengths is not None:  # the filter's tail must not leak into the padding
                x = x * length_mask(lengths, x.shape[1], x).squeeze(1).to(x.dtype)
        snr = self.augment.noise_snr
        noise = (float(snr[0]), float(snr[1])) if train and snr else None
        if noise:
            mask = length_mask(lengths, x.shape[1], x).squeeze(1)
            x = add_noise(x, mask, noise, self.augment.noise_prob)
        if self.waveform:
            # The frontend (STFT, log) stays in float32 even under mixed precision.
            with torch.autocast(device_type=x.device.type, enabled=False):
                feats = self.model.frontend(x.float())
            lengths = self._frames(lengths, feats)
        else:
            feats = x
        if feats.dim() != 3:  # spectrogram images (B, 3, H, W): fixed size, no lengths
            return feats, None
        if train and self.spec_augment is not None:
            feats = self.spec_augment(feats)
        return feats, lengths

    def _mix_real_noise(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Mix a random excerpt of a noise recording into a share of the waveforms."""
        a, sr = self.augment, self.model.feature_config.sample_rate
        bank, (low, high) = self.noise_bank, a.real_noise_snr
        assert bank is not None  # __call__ mixes only with a bank
        out = x.clone()
        for i in range(x.shape[0]):
            if self.rng.random() >= a.real_noise_prob:
                continue
            n = int(lengths[i]) if lengths is not None else x.shape[1]
            wav = x[i, :n].detach().cpu().float().numpy()
            mixed = bank.mix(wav, (float(low), float(high)), self.rng, sr=sr)
            out[i, :n] = torch.from_numpy(mixed).to(x)
        return out

    def _frames(self, samples: torch.Tensor | None, feats: torch.Tensor) -> torch.Tensor | None:
        if samples is None or feats.dim() != 3:
            return None
        from voxid.features import frames_for

        fc = self.model.feature_config
        frames = [min(frames_for(fc, int(n)), feats.shape[1]) for n in samples.tolist()]
        return torch.tensor(frames, device=feats.device)
