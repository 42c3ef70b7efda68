"""Audio sources: files at odd rates, raw stdin PCM, the microphone callback path, device listing."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.sources import (
    FileSource,
    MicSource,
    StdinSource,
    StreamResampler,
    format_devices,
    list_input_devices,
    open_source,
)
from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE, load_audio, resample, to_mono


def _tone(rate: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return left.astype(np.float32)
    right = 0.25 * np.sin(2 * np.pi * 2 * freq * t)
    return np.stack([left, right], axis=1).astype(np.float32)


def _collect(source) -> np.ndarray:
    blocks = list(source.blocks())
    for b in blocks:
        assert b.dtype == np.float32 and b.ndim == 1
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


@pytest.mark.parametrize(
    "rate,channels,ext",
    [(8000, 2, "wav"), (48000, 1, "wav"), (44100, 1, "flac"), (SAMPLE_RATE, 1, "wav")],
)
def test_file_source_converts_to_16k_mono(tmp_path: Path, rate: int, channels: int, ext: str) -> None:
    wave = _tone(rate, 1.3, channels)
    path = tmp_path / f"tone_{rate}.{ext}"
    sf.write(path, wave, rate, subtype="PCM_16")
    src = FileSource(path, block_size=512)
    blocks = list(src.blocks())
    assert all(b.size <= 512 for b in blocks)
    out = np.concatenate(blocks)
    assert out.size == -(-wave.shape[0] * SAMPLE_RATE // rate)
    # content: the 440 Hz left channel (plus 880 Hz right when stereo), averaged, at 16 kHz
    t = np.arange(out.size) / SAMPLE_RATE
    expected = 0.5 * np.sin(2 * np.pi * 440 * t)
    if channels == 2:
        expected = (expected + 0.25 * np.sin(2 * np.pi * 880 * t)) / 2
    mid = slice(800, out.size - 800)
    assert np.max(np.abs(out[mid] - expected[mid])) < 0.01
    assert src.duration == pytest.approx(1.3, abs=0.01)


def test_file_source_realtime_paces_blocks(tmp_path: Path) -> None:
    path = tmp_path / "half.wav"
    sf.write(path, _tone(SAMPLE_RATE, 0.5), SAMPLE_RATE)
    t0 = time.perf_counter()
    out = _collect(FileSource(path, realtime=True, block_size=1600))
    elapsed = time.perf_counter() - t0
    assert out.size == SAMPLE_RATE // 2
    assert 0.4 <= elapsed < 1.5


def test_file_source_close_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(SAMPLE_RATE, 1.0), SAMPLE_RATE)
    src = FileSource(path, block_size=1000)
    got = []
    for block in src.blocks():
        got.append(block)
        src.close()
    assert len(got) == 1


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 20)
    for spec, needle in [(tmp_path / "missing.wav", "not found"), (empty, "empty"), (junk, "not a readable audio file")]:
        with pytest.raises(HBAFError, match=needle) as info:
            open_source(str(spec))
        assert "\n" not in str(info.value)


def test_stream_resampler_matches_whole_signal_resample() -> None:
    rng = np.random.default_rng(1)
    for rate in (48000, 44100, 22050, 8000):
        x = (0.3 * rng.standard_normal(rate + 77)).astype(np.float32)
        r = StreamResampler(rate)
        parts, i = [], 0
        while i < x.size:
            n = int(rng.integers(1, 4000))
            parts.append(r.process(x[i : i + n]))
            i += n
        parts.append(r.flush())
        y = np.concatenate(parts)
        ref = resample(x, rate)
        assert y.size == ref.size
        assert np.max(np.abs(y - ref)) < 1e-5


def test_stdin_source_16k_mono() -> None:
    rng = np.random.default_rng(2)
    pcm = rng.integers(-20000, 20000, size=5000, dtype=np.int16)
    out = _collect(StdinSource(io.BytesIO(pcm.astype("<i2").tobytes()), block_size=512))
    np.testing.assert_allclose(out, pcm.astype(np.float32) / 32768.0, atol=1e-7)


def test_stdin_source_48k_stereo_matches_file_path(tmp_path: Path) -> None:
    wave = _tone(48000, 0.7, channels=2)
    pcm = np.round(wave * 32767).astype("<i2")
    path = tmp_path / "s.wav"
    sf.write(path, pcm, 48000, subtype="PCM_16")
    out = _collect(StdinSource(io.BytesIO(pcm.tobytes()), rate=48000, channels=2))
    ref = load_audio(path)
    assert out.size == ref.size
    assert np.max(np.abs(out - ref)) < 1e-4


def test_stdin_odd_trailing_byte_is_dropped() -> None:
    pcm = np.arange(-500, 500, dtype="<i2")
    out = _collect(StdinSource(io.BytesIO(pcm.tobytes() + b"\x01")))
    np.testing.assert_allclose(out, pcm.astype(np.float32) / 32768.0)


def test_stdin_empty_or_wav_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HBAFError, match="no audio on stdin"):
        _collect(StdinSource(io.BytesIO(b"")))
    path = tmp_path / "x.wav"
    sf.write(path, _tone(SAMPLE_RATE, 0.2), SAMPLE_RATE)
    with pytest.raises(HBAFError, match="WAV file"):
        _collect(StdinSource(io.BytesIO(path.read_bytes())))


def test_mic_callback_48k_stereo_equals_file_path(tmp_path: Path) -> None:
    wave = _tone(48000, 1.1, channels=2)
    path = tmp_path / "mic.wav"
    sf.write(path, wave, 48000, subtype="FLOAT")
    captured, _ = sf.read(path, dtype="float32", always_2d=True)
    mic = MicSource(samplerate=48000, channels=2, block_size=512, queue_blocks=1000)
    frames = 1536
    for i in range(0, captured.shape[0], frames):
        block = captured[i : i + frames]
        mic._callback(block, block.shape[0], None, None)
    mic.close()
    out = _collect(mic)
    ref = FileSource(path).audio
    assert mic.dropped_blocks == 0
    assert out.size == ref.size
    assert np.max(np.abs(out - ref)) < 1e-4
    np.testing.assert_allclose(ref, resample(to_mono(captured), 48000), atol=1e-6)


def test_mic_callback_never_blocks_and_counts_drops() -> None:
    mic = MicSource(samplerate=48000, channels=2, queue_blocks=4)
    block = np.ones((1536, 2), dtype=np.float32) * 0.1

    class Flags:
        input_overflow = True

        def __bool__(self) -> bool:
            return True

    worst = 0.0
    for i in range(10):
        t0 = time.perf_counter()
        mic._callback(block, 1536, None, Flags() if i == 0 else None)
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.05
    assert mic.dropped_blocks == 6
    assert mic.overflows == 1 and mic.status_flags == 1
    block[:] = 0.5  # the queue holds copies, not views of the driver's buffer
    mic.close()
    out = _collect(mic)
    assert out.size == 4 * 512
    assert np.allclose(out[200:-200], 0.1, atol=1e-3)


def test_mic_stream_that_stops_is_reported_as_disappeared() -> None:
    class StoppedStream:
        active = False

        def stop(self) -> None:
            pass

        def close(self) -> None:
            pass

    mic = MicSource(device=3, samplerate=48000, channels=1)
    mic._stream = StoppedStream()
    with pytest.raises(HBAFError, match="input device 3 disappeared.*hbaf-edge devices"):
        _collect(mic)


def _input_devices_or_error() -> list[dict] | HBAFError:
    try:
        return list_input_devices()
    except HBAFError as err:
        return err


def test_list_devices_without_sound_card_is_clean() -> None:
    result = _input_devices_or_error()
    if isinstance(result, HBAFError):
        assert "\n" not in str(result)
        assert "libportaudio2" in str(result) or "hbaf-edge devices" in str(result)
        return
    for dev in result:
        assert {"index", "name", "max_input_channels", "default_samplerate", "supported_rates"} <= set(dev)
    text = format_devices(result)
    assert isinstance(text, str) and text


def test_format_devices_table_and_empty() -> None:
    assert "no audio input devices" in format_devices([])
    table = format_devices(
        [{"index": 2, "name": "USB PnP Sound Device", "max_input_channels": 2, "default_samplerate": 48000.0,
          "supported_rates": [44100, 48000], "is_default": True}]
    )
    assert "USB PnP Sound Device" in table and "44100, 48000" in table and "*" in table


def test_mic_without_device_is_a_clear_error() -> None:
    result = _input_devices_or_error()
    if isinstance(result, list) and result:
        pytest.skip("this machine has an input device")
    with pytest.raises(HBAFError) as info:
        MicSource().start()
    msg = str(info.value)
    assert "\n" not in msg
    assert "hbaf-edge devices" in msg or "libportaudio2" in msg


def test_open_source_dispatch(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _tone(SAMPLE_RATE, 0.1), SAMPLE_RATE)
    assert isinstance(open_source(str(path)), FileSource)
    assert isinstance(open_source("-", stream=io.BytesIO(b"")), StdinSource)
    mic = open_source("mic")
    assert isinstance(mic, MicSource) and mic.device is None
    assert open_source("mic:3").device == 3
