"""voxid.audio: every supported source and format, and every way input can be bad."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile as sf

from conftest import PEAK_RSS_MB
from voxid.audio import (
    AUDIO_EXTENSIONS,
    AudioDecodeError,
    AudioError,
    AudioNotFound,
    AudioTooLong,
    EmptyAudio,
    NonFiniteAudio,
    SilentAudio,
    audio_info,
    load_audio,
)
from voxid.errors import ConfigError, VoxidError


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1 / sr)[spectrum.argmax()])


def encode_pyav(path, fmt: str, codec: str, wav: np.ndarray, sr: int) -> None:
    """Encode a mono float signal with ffmpeg (through PyAV)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr, layout="mono")
        stream.bit_rate = 64000  # wmav2 refuses to open without one
        frame = av.AudioFrame.from_ndarray(wav[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def test_stereo_44k_is_mixed_and_resampled(write_wav):
    left, right = sine(1000, 1.5, 44100), np.zeros(round(1.5 * 44100), np.float32)
    path = write_wav("stereo.wav", np.stack([left, right], axis=1), sr=44100)
    wav = load_audio(path, sr=16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.size == 24000
    assert peak_hz(wav, 16000) == pytest.approx(1000, abs=2)
    # mixing averages the channels: a 0.5 tone on one side becomes 0.25
    assert np.abs(wav[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)


def test_pcm_u8_and_native_rate(write_wav):
    path = write_wav("u8.wav", sine(440, 0.5, 8000), sr=8000, subtype="PCM_U8")
    wav = load_audio(path, sr=8000)
    assert wav.size == 4000
    assert np.abs(wav).max() == pytest.approx(0.5, abs=0.02)
    assert peak_hz(wav, 8000) == pytest.approx(440, abs=3)


def test_bytes_and_file_object_sources(write_wav):
    path = write_wav("tone.flac", sine(300, 1.0, 16000), sr=16000)
    data = path.read_bytes()
    from_path = load_audio(path)
    np.testing.assert_array_equal(load_audio(data), from_path)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(load_audio(fh), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_path)


def test_mp3_through_soundfile(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    path = tmp_path / "tone.mp3"
    sf.write(path, sine(500, 1.0, 16000), 16000, format="MP3")
    wav = load_audio(path)
    assert abs(wav.size - 16000) < 2000  # MP3 frames pad the ends
    assert peak_hz(wav, 16000) == pytest.approx(500, abs=3)


@pytest.mark.parametrize(("suffix", "fmt", "codec"), [(".m4a", "mp4", "aac"),
                                                      (".wma", "asf", "wmav2")])  # fmt: skip
def test_pyav_formats(tmp_path, suffix, fmt, codec):
    path = tmp_path / f"tone{suffix}"
    encode_pyav(path, fmt, codec, sine(440, 1.0, 16000, amp=0.3), 16000)
    wav = load_audio(path, sr=16000)
    assert abs(wav.size - 16000) < 2000  # codec priming and padding
    assert peak_hz(wav, 16000) == pytest.approx(440, abs=3)
    info = audio_info(path)
    assert info.sample_rate == 16000 and info.channels == 1
    assert info.duration == pytest.approx(1.0, abs=0.1)
    with pytest.raises(AudioTooLong, match=r"tone.*0\.5 s limit"):
        load_audio(path, max_seconds=0.5)
    np.testing.assert_array_equal(load_audio(path.read_bytes(), name="x.m4a"), wav)


def test_normalize(write_wav):
    path = write_wav("quiet.wav", sine(200, 1.0, 16000, amp=0.05))
    assert np.abs(load_audio(path, normalize="peak")).max() == pytest.approx(1.0, abs=1e-6)
    rms = np.sqrt(np.mean(load_audio(path, normalize="rms") ** 2))
    assert rms == pytest.approx(0.1, rel=1e-4)
    np.testing.assert_allclose(load_audio(path).max(), 0.05, atol=1e-3)


def test_missing_file(tmp_path):
    with pytest.raises(AudioNotFound, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudio, match=r"empty\.wav: empty file"):
        load_audio(path)
    with pytest.raises(EmptyAudio, match=r"upload\.wav"):
        load_audio(b"", name="upload.wav")


def test_text_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not a recording\n" * 20)
    with pytest.raises(AudioDecodeError, match=r"notes\.wav: not a recognised audio format"):
        load_audio(path)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_flac(tmp_path, how):
    buf = io.BytesIO()
    sf.write(buf, sine(300, 1.0, 16000) + 0.01, 16000, format="FLAC")
    data = buf.getvalue()
    body = data[: len(data) // 2] if how == "truncated" else b"fLaC" + bytes(range(256)) * 8
    path = tmp_path / f"{how}.flac"
    path.write_bytes(body)
    with pytest.raises(AudioDecodeError, match=rf"{how}\.flac: corrupt or truncated"):
        load_audio(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioDecodeError, match=r"noise\.flac"):
        load_audio(path)


def test_zero_samples(write_wav):
    path = write_wav("zero.wav", np.zeros(0, np.float32))
    with pytest.raises(EmptyAudio, match=r"zero\.wav: no samples"):
        load_audio(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite(write_wav, value):
    wav = sine(300, 0.2, 16000)
    wav[100:] = value
    path = write_wav("bad.wav", wav, subtype="FLOAT")
    with pytest.raises(NonFiniteAudio, match=r"bad\.wav: contains NaN"):
        load_audio(path)


def test_digital_silence(write_wav):
    path = write_wav("silence.wav", np.zeros(16000, np.float32))
    with pytest.raises(SilentAudio, match=r"silence\.wav: all samples are zero"):
        load_audio(path)
    # very quiet is not silent: that is the VAD's business
    assert load_audio(write_wav("hiss.wav", np.full(16000, 1e-4, np.float32))).size == 16000


def test_unknown_extension(tmp_path, write_wav):
    path = tmp_path / "tone.xyz"
    path.write_bytes(write_wav("t.wav", sine(300, 0.2, 16000)).read_bytes())
    with pytest.raises(AudioDecodeError, match=r"tone\.xyz: unknown audio extension '\.xyz'"):
        load_audio(path)
    assert ".xyz" not in AUDIO_EXTENSIONS and {".wav", ".flac", ".m4a"} <= AUDIO_EXTENSIONS


def test_too_long_is_refused_from_the_header(write_wav):
    path = write_wav("long.wav", sine(300, 3.0, 16000))
    with pytest.raises(AudioTooLong, match=r"long\.wav: 3\.0 s is longer than the 2 s limit"):
        load_audio(path, max_seconds=2.0)
    assert load_audio(path, max_seconds=None).size == 48000


def test_wide_high_rate_audio_is_refused_before_decoding(wide_flac):
    # 60 s is under the limit, but 8 channels at 384 kHz decode to what 120 s at 192 kHz
    # stereo would be four times over: the header alone decides.
    with pytest.raises(
        AudioTooLong,
        match=r"wide\.flac: 60\.0 s x 8 channels at 384000 Hz decodes to 737 MB, "
        r"over the 184 MB limit \(120 s at 192 kHz stereo\)$",
    ):
        load_audio(wide_flac, max_seconds=120)
    from voxid.audio import AudioTooLarge

    with pytest.raises(AudioTooLarge):
        load_audio(wide_flac.read_bytes(), max_seconds=120, name="wide.flac")


def test_wide_audio_decodes_in_blocks_with_bounded_memory(wide_flac):
    """737 MB of decoded samples go through a few MB at a time; only the mono output stays."""
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's RSS.
    code = (
        "from voxid.audio import load_audio\n"
        f"{PEAK_RSS_MB}\n"
        "before = peak_rss_mb()\n"
        f"wav = load_audio({str(wide_flac)!r}, sr=16000, max_seconds=600)\n"
        "grown = peak_rss_mb() - before\n"
        "print(wav.size, float(abs(wav[:16000]).max()), float(abs(wav[20000:]).max()), grown)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    size, head, rest, grown_mb = out.stdout.split()
    assert int(size) == 60 * 16000
    # the tone in one channel of eight, mixed down: about 0.2 * 2.28 / 8 at its peaks
    assert 0.03 < float(head) < 0.08 and float(rest) < 1e-3
    assert int(grown_mb) < 300, f"peak RSS grew by {grown_mb} MB"


def test_wide_m4a_is_refused_from_the_container_header(tmp_path):
    path = tmp_path / "wide.m4a"
    sr = 96000
    wav = np.tile(sine(440, 1.5, sr, amp=0.1)[None, :], (8, 1))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr, layout="7.1")
        # packed: PyAV 18 cannot fill more than 8 planes from an array
        packed = np.ascontiguousarray(wav.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout="7.1")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    # 1.5 s x 8 channels x 96 kHz: more samples than 2 s of 192 kHz stereo
    with pytest.raises(AudioTooLong, match=r"wide\.m4a: .*8 channels at 96000 Hz"):
        load_audio(path, max_seconds=2)
    assert load_audio(path, max_seconds=4).size == pytest.approx(24000, abs=1600)


def test_bad_parameters(write_wav):
    path = write_wav("ok.wav", sine(300, 0.2, 16000))
    with pytest.raises(ConfigError, match="normalize"):
        load_audio(path, normalize="loud")
    with pytest.raises(ConfigError, match="sr"):
        load_audio(path, sr=0)
    with pytest.raises(ConfigError, match="source"):
        load_audio(12345)


def test_errors_are_voxid_errors():
    for cls in (AudioNotFound, AudioDecodeError, EmptyAudio, SilentAudio, NonFiniteAudio,
                AudioTooLong):  # fmt: skip
        assert issubclass(cls, AudioError) and issubclass(cls, VoxidError)


def test_audio_info(write_wav):
    path = write_wav("info.flac", np.zeros((8000, 2), np.float32), sr=8000)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (8000, 2, 8000)
    assert info.duration == pytest.approx(1.0)


def test_real_speech(shared_data):
    voxforge = sorted((shared_data / "voxforge").glob("*/*.wav"))[0]
    assert audio_info(voxforge).sample_rate == 8000
    wav = load_audio(voxforge, sr=16000)
    assert wav.size == pytest.approx(2 * sf.info(voxforge).frames, abs=2)
    assert 0.001 < np.sqrt(np.mean(wav**2)) < 0.7
    asc = sorted((shared_data / "asc30").glob("*/*.flac"))[0]
    native, _ = sf.read(asc, dtype="float32")
    np.testing.assert_array_equal(load_audio(asc, sr=16000), native)


def test_mp3_whose_header_overstates_its_length(shared_data):
    # Common Voice MP3s announce 240 more frames than they decode to; the decoder must
    # stop at the decoded ones, not pass on the unfilled end of its buffer (uninitialised
    # memory: garbage, sometimes NaN, once other code had used that memory).
    path = sorted((shared_data / "cv-fa").glob("*/*.mp3"))[0]
    decoded, rate = sf.read(path, dtype="float32")
    assert sf.info(path).frames > decoded.shape[0]
    junk = [np.full(1 << 20, np.nan, np.float32) for _ in range(8)]  # dirty the heap
    del junk
    np.testing.assert_array_equal(load_audio(path, sr=rate), decoded)
