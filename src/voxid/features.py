"""Feature front-ends as torch modules: waveform (B, samples) -> features (B, T, F).

Pure torch (`torch.stft` with a registered window buffer and a precomputed mel matrix), so
the same module runs on CPU or GPU, batched, and exports to ONNX (opset 17+). Every STFT
is centred like librosa (`center=True`, zero padding): `T = 1 + n_samples // hop_length`.

Kinds: `logmel` (librosa's melspectrogram + power_to_db(ref=max)), `fbank` (log mel,
mean-normalised), `image` (the CNN recipe's mel image in [0, 1], time x mel, resized to
image_size x image_size; `colorize` maps it to viridis RGB), `mfcc` (+ deltas, 3 x n_mfcc),
`waveform` (identity).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxid.errors import ConfigError, require_positive

__all__ = ["KINDS", "Fbank", "FeatureConfig", "LogMel", "Mfcc", "SpectrogramImage",
           "Waveform", "build_frontend", "colorize", "frames_for", "mel_filterbank"]  # fmt: skip

KINDS = ("logmel", "fbank", "image", "mfcc", "waveform")
#: How `fbank` normalises each utterance: `band` subtracts every mel band's mean over time
#: (cepstral mean normalisation: removes the channel, and with it the long-term spectrum);
#: `level` subtracts one mean over all bands and frames (removes the recording gain only,
#: keeps the spectral envelope, a speaker cue that 1-s clips have little else of); `none`.
NORMS = ("band", "level", "none")


@dataclass
class FeatureConfig:
    """What a front-end computes; stored with every HDF5 store and checkpoint.

    `win_length=None` means `n_fft`; `f_max=None` means `sample_rate / 2`. `top_db` is the
    dynamic range kept below each utterance's maximum (logmel, image); `norm` is how fbank
    normalises each utterance (`NORMS`).

    >>> FeatureConfig.fbank().n_mels, FeatureConfig.image().dim
    (80, 200)
    >>> FeatureConfig.from_dict(FeatureConfig.mfcc().to_dict()) == FeatureConfig.mfcc()
    True
    """

    kind: str = "logmel"
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 2048
    win_length: int | None = None
    hop_length: int = 512
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float = 80.0
    image_size: int = 200
    n_mfcc: int = 20
    norm: str = "band"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"features.kind: must be one of {KINDS}, got {self.kind!r}")
        for key in ("sample_rate", "n_mels", "n_fft", "hop_length", "image_size", "n_mfcc"):
            require_positive(f"features.{key}", getattr(self, key), integer=True)
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"features.win_length: must be in 1..n_fft={self.n_fft}, "
                              f"got {self.win_length!r}")  # fmt: skip
        nyquist = self.sample_rate / 2
        if not 0 <= self.f_min < (self.f_max or nyquist) <= nyquist:
            raise ConfigError(f"features.f_min/f_max: need 0 <= f_min < f_max <= {nyquist:g} Hz, "
                              f"got {self.f_min!r}/{self.f_max!r}")  # fmt: skip
        require_positive("features.top_db", self.top_db)
        if self.norm not in NORMS:
            raise ConfigError(f"features.norm: must be one of {NORMS}, got {self.norm!r}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ConfigError(f"features.n_mfcc: must be <= n_mels={self.n_mels}")

    @classmethod
    def logmel(cls, **overrides: Any) -> FeatureConfig:
        """16 kHz, 64 mel, n_fft 2048, hop 512, power in dB re each utterance's max."""
        return cls(**{"kind": "logmel", **overrides})

    @classmethod
    def fbank(cls, **overrides: Any) -> FeatureConfig:
        """16 kHz, 80 mel, 25 ms window, 10 ms hop, log(mel + 1e-6), mean-normalised."""
        base = dict(kind="fbank", n_mels=80, n_fft=512, win_length=400, hop_length=160,
                    f_min=20.0)  # fmt: skip
        return cls(**{**base, **overrides})

    @classmethod
    def image(cls, **overrides: Any) -> FeatureConfig:
        """22,050 Hz, 128-mel dB image scaled to [0, 1], resized to 200 x 200 (time x mel)."""
        base = dict(kind="image", sample_rate=22050, n_mels=128, n_fft=2048, hop_length=512)
        return cls(**{**base, **overrides})

    @classmethod
    def mfcc(cls, **overrides: Any) -> FeatureConfig:
        """16 kHz, 20 MFCC from 40 mel (25 ms / 10 ms) + deltas + delta-deltas = 60."""
        base = dict(kind="mfcc", n_mels=40, n_fft=512, win_length=400, hop_length=160,
                    n_mfcc=20)  # fmt: skip
        return cls(**{**base, **overrides})

    @classmethod
    def waveform(cls, **overrides: Any) -> FeatureConfig:
        """Raw samples at 16 kHz (the model's own front-end does the rest)."""
        return cls(**{"kind": "waveform", **overrides})

    @property
    def dim(self) -> int:
        """F, the size of the last feature axis (1 for waveform)."""
        return {"logmel": self.n_mels, "fbank": self.n_mels, "image": self.image_size,
                "mfcc": 3 * self.n_mfcc, "waveform": 1}[self.kind]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build from a dict, refusing unknown keys."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"features: unknown keys {unknown}")
        return cls(**data)


def frames_for(cfg: FeatureConfig, n_samples: int) -> int:
    """Number of frames T the front-end gives for `n_samples` samples (centred STFT).

    >>> frames_for(FeatureConfig.fbank(), 16000), frames_for(FeatureConfig.image(), 5)
    (101, 200)
    """
    if cfg.kind == "waveform":
        return int(n_samples)
    if cfg.kind == "image":
        return cfg.image_size
    return 1 + int(n_samples) // cfg.hop_length


def _hz_to_mel(f: float | np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above (librosa's default).
    mel = f / (200.0 / 3)
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27), mel)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27 * (m - 15.0)), m * 200.0 / 3)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, *, htk: bool = False,
                   slaney_norm: bool = True) -> np.ndarray:  # fmt: skip
    """Triangular mel filters `(n_mels, 1 + n_fft // 2)` as librosa.filters.mel builds them.

    >>> mel_filterbank(16000, 512, 40).shape
    (40, 257)
    """
    f_max = sr / 2 if f_max is None else f_max
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(f_min, htk), _hz_to_mel(f_max, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if slaney_norm:  # equal area per filter
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


class _MelPower(nn.Module):
    """Centred power STFT followed by a mel matrix: (B, samples) -> (B, T, n_mels)."""

    window: torch.Tensor  # buffers (register_buffer), declared for the type checker
    mel: torch.Tensor

    def __init__(self, cfg: FeatureConfig, *, htk: bool, slaney_norm: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.win = cfg.win_length or cfg.n_fft
        # periodic Hann, as scipy.signal.get_window("hann", n, fftbins=True) in librosa
        self.register_buffer("window", torch.hann_window(self.win, periodic=True), False)
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max,
                            htk=htk, slaney_norm=slaney_norm)  # fmt: skip
        self.register_buffer("mel", torch.from_numpy(fb.T.copy()), False)

    def mel_power(self, wav: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram `(B, T, n_mels)` before any log or normalisation."""
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        spec = torch.stft(wav.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          pad_mode="constant", return_complex=True)  # fmt: skip
        parts = torch.view_as_real(spec)
        # Two products and a sum: cheaper than pow(2).sum(-1) on the CPU (BENCHMARKS.md, prepare).
        power = parts[..., 0] * parts[..., 0] + parts[..., 1] * parts[..., 1]  # (B, freq, T)
        return torch.matmul(power.transpose(1, 2), self.mel)


def _db_re_max(mel: torch.Tensor, top_db: float) -> torch.Tensor:
    """librosa.power_to_db(S, ref=np.max, amin=1e-10, top_db) per utterance (axis 0)."""
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    peak = db.amax(dim=(1, 2), keepdim=True)
    return torch.maximum(db - peak, torch.full_like(db, -top_db))


class LogMel(_MelPower):
    """Log-mel power in dB re each utterance's maximum, clipped at -top_db (librosa defaults).

    >>> LogMel(FeatureConfig.logmel())(torch.randn(2, 16000)).shape
    torch.Size([2, 32, 64])
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__(cfg, htk=False, slaney_norm=True)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return _db_re_max(self.mel_power(wav), self.cfg.top_db)


class Fbank(_MelPower):
    """Log mel filterbank energies (HTK mel scale), mean-normalised per utterance (`norm`).

    >>> Fbank(FeatureConfig.fbank())(torch.randn(2, 16000)).shape
    torch.Size([2, 101, 80])
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__(cfg, htk=True, slaney_norm=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        feats = torch.log(self.mel_power(wav) + 1e-6)
        if self.cfg.norm == "band":
            return feats - feats.mean(dim=1, keepdim=True)
        if self.cfg.norm == "level":
            return feats - feats.mean(dim=(1, 2), keepdim=True)
        return feats


class SpectrogramImage(_MelPower):
    """The CNN recipe's image: mel dB re max scaled to [0, 1], resized to S x S (bilinear).

    Output `(B, S, S)`: axis 1 is time (first frame first), axis 2 is mel frequency (lowest
    first). `colorize` turns it into the RGB image the CNN (and the PNG writer) sees.

    >>> SpectrogramImage(FeatureConfig.image(image_size=64))(torch.randn(1, 22050)).shape
    torch.Size([1, 64, 64])
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__(cfg, htk=False, slaney_norm=True)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        unit = _db_re_max(self.mel_power(wav), self.cfg.top_db) / self.cfg.top_db + 1.0
        size = (self.cfg.image_size, self.cfg.image_size)
        img = F.interpolate(unit.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        return img.squeeze(1).clamp(0.0, 1.0)


def _deltas(x: torch.Tensor, n: int = 2) -> torch.Tensor:
    """Regression deltas over time (axis 1), edges replicated (Kaldi/HTK, window 2n + 1)."""
    padded = torch.cat([x[:, :1].expand(-1, n, -1), x, x[:, -1:].expand(-1, n, -1)], dim=1)
    t = x.shape[1]
    num = padded[:, n + 1 : n + 1 + t] - padded[:, n - 1 : n - 1 + t]
    for k in range(2, n + 1):
        num = num + k * (padded[:, n + k : n + k + t] - padded[:, n - k : n - k + t])
    return num / (2 * sum(k * k for k in range(1, n + 1)))


class Mfcc(_MelPower):
    """MFCC (orthonormal DCT-II of 10 log10 mel power) + deltas + delta-deltas, mean-normalised.

    >>> Mfcc(FeatureConfig.mfcc())(torch.randn(1, 8000)).shape
    torch.Size([1, 51, 60])
    """

    dct: torch.Tensor  # a buffer

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__(cfg, htk=False, slaney_norm=True)
        n, k = cfg.n_mels, np.arange(cfg.n_mels)
        dct = np.cos(np.pi / n * (k[:, None] + 0.5) * k[None, : cfg.n_mfcc]) * math.sqrt(2 / n)
        dct[:, 0] /= math.sqrt(2)
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)), False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        log_mel = 10.0 * torch.log10(torch.clamp(self.mel_power(wav), min=1e-10))
        c = torch.matmul(log_mel, self.dct)
        d = _deltas(c)
        feats = torch.cat([c, d, _deltas(d)], dim=2)
        return feats - feats.mean(dim=1, keepdim=True)


class Waveform(nn.Module):
    """Identity front-end: (B, samples) stays (B, samples).

    >>> Waveform()(torch.zeros(2, 5)).shape
    torch.Size([2, 5])
    """

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return wav.unsqueeze(0) if wav.dim() == 1 else wav


_FRONTENDS = {"logmel": LogMel, "fbank": Fbank, "image": SpectrogramImage, "mfcc": Mfcc}


def build_frontend(cfg: FeatureConfig | dict) -> nn.Module:
    """The front-end module for `cfg` (a FeatureConfig or its dict).

    >>> build_frontend(FeatureConfig.fbank()).__class__.__name__
    'Fbank'
    """
    if isinstance(cfg, dict):
        cfg = FeatureConfig.from_dict(cfg)
    if cfg.kind == "waveform":
        return Waveform()
    return _FRONTENDS[cfg.kind](cfg)


# matplotlib's viridis at 256 levels, 8-bit RGB: a constant, so importing voxid needs no
# matplotlib and a PNG written from colorize() holds exactly the pixels the CNN sees.
_VIRIDIS_HEX = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)
VIRIDIS = torch.frombuffer(bytearray.fromhex(_VIRIDIS_HEX), dtype=torch.uint8).view(256, 3)


def colorize(img: torch.Tensor) -> torch.Tensor:
    """Map a grey image `(B, H, W)` in [0, 1] to viridis RGB `(B, 3, H, W)` in [0, 1].

    Values are quantised to 256 levels (as a PNG would) and looked up in a constant table,
    which exports to ONNX as a Gather.

    >>> rgb = colorize(torch.tensor([[[0.0, 1.0]]]))
    >>> rgb.shape, [round(v, 3) for v in rgb[0, :, 0, 1].tolist()]
    (torch.Size([1, 3, 1, 2]), [0.992, 0.906, 0.145])
    """
    lut = VIRIDIS.to(device=img.device, dtype=torch.float32) / 255.0
    index = torch.round(img.clamp(0.0, 1.0) * 255.0).long()
    return lut[index].permute(0, 3, 1, 2)
