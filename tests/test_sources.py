"""Audio sources: files at odd rates, raw stdin PCM, the microphone callback path, device listing."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.mic import MicSource, format_devices, list_input_devices
from edge_runtime.sources import FileSource, StdinSource
from hbaf.audio import StreamResampler, load_audio, resample, to_mono
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError


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
            FileSource(spec)
        assert "\n" not in str(info.value)


REPO = Path(__file__).resolve().parents[1]
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True, capture_output=True)
    return dst


@pytest.mark.parametrize("rate,channels,ext,subtype", [
    (44100, 2, "flac", "PCM_16"), (48000, 1, "wav", "FLOAT"), (8000, 1, "wav", "PCM_U8"), (22050, 3, "ogg", "VORBIS"),
])
def test_file_source_streams_what_load_audio_returns(tmp_path: Path, rate: int, channels: int, ext: str, subtype: str) -> None:
    """Decoded and resampled chunk by chunk, whatever the block size, the file gives the samples that
    decoding and resampling it whole gives."""
    x = (0.3 * np.random.default_rng(rate).standard_normal((3 * rate + 123, channels))).astype(np.float32)
    path = tmp_path / f"noise.{ext}"
    sf.write(path, x, rate, subtype=subtype)
    ref = load_audio(path)
    for block_size in (512, 1000, 7):
        src = FileSource(path, block_size=block_size)
        blocks = list(src.blocks())
        assert all(b.size == block_size for b in blocks[:-1]) and 0 < blocks[-1].size <= block_size
        out = np.concatenate(blocks)
        assert out.size == ref.size and np.max(np.abs(out - ref)) < 1e-5
        assert src.duration == pytest.approx(ref.size / SAMPLE_RATE, abs=1e-3)
    assert np.concatenate(list(src.blocks())).size == ref.size  # a second pass reads the file again


@needs_ffmpeg
def test_file_source_streams_through_ffmpeg(tmp_path: Path) -> None:
    """Formats soundfile does not read (m4a) and WAVs whose codec only ffmpeg decodes (mp2) come
    through an ffmpeg pipe, block by block, as load_audio decodes them."""
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(44100, 2.5, channels=2), 44100, subtype="PCM_16")
    for dst, args in [(tmp_path / "tone.m4a", ("-c:a", "aac")), (tmp_path / "mp2-in.wav", ("-c:a", "mp2", "-f", "wav"))]:
        _ffmpeg(wav, dst, *args)
        src = FileSource(dst, block_size=512)
        out = _collect(src)
        ref = load_audio(dst)
        assert out.size == ref.size > 2 * SAMPLE_RATE and np.array_equal(out, ref)
        assert src.duration == pytest.approx(ref.size / SAMPLE_RATE, abs=1e-3)


@needs_ffmpeg
def test_file_source_close_stops_ffmpeg(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(SAMPLE_RATE, 5.0), SAMPLE_RATE)
    src = FileSource(_ffmpeg(wav, tmp_path / "tone.m4a", "-c:a", "aac"), block_size=512)
    proc = src._reader.proc
    got = []
    for block in src.blocks():
        got.append(block)
        src.close()
    assert len(got) == 1 and proc.wait(timeout=10) is not None
    unused = FileSource(tmp_path / "tone.m4a")  # opened, never read: close() ends ffmpeg as well
    proc = unused._reader.proc
    unused.close()
    assert proc.wait(timeout=10) is not None
    # close() from another thread kills ffmpeg under a reader: the stream just ends, it is no decode error
    reader = FileSource(tmp_path / "tone.m4a")._reader
    reader.interrupt()
    while reader.read().size:
        pass
    assert reader.proc.returncode != 0
    reader.close()


def test_corrupt_wav_is_blamed_on_the_file_not_on_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    """soundfile recognises a WAV cut inside its header and cannot read it: without ffmpeg the error
    still names the file and soundfile's reason (it used to say that ffmpeg is not installed)."""
    good = tmp_path / "good.wav"
    sf.write(good, _tone(SAMPLE_RATE, 0.5), SAMPLE_RATE, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:30])
    m4a = _ffmpeg(good, tmp_path / "tone.m4a", "-c:a", "aac") if shutil.which("ffmpeg") else None
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    monkeypatch.setenv("PATH", str(no_tools))  # no ffmpeg
    for read in (load_audio, lambda p: _collect(FileSource(p))):
        with pytest.raises(HBAFError) as info:
            read(cut)
        msg = str(info.value)
        assert msg.startswith(f"not a readable audio file: {cut} (soundfile: Error in WAV file. No 'data' chunk marker)"), msg
        assert "ffmpeg is not installed" not in msg and "\n" not in msg
        if m4a is not None:  # a format only ffmpeg reads: then ffmpeg is what is missing
            with pytest.raises(HBAFError, match="ffmpeg is not installed; apt-get install ffmpeg"):
                read(m4a)


def test_file_source_memory_stays_constant(tmp_path: Path) -> None:
    """Ten minutes of 16 kHz audio decode to 38 MB of float32 (and two minutes of 48 kHz stereo to
    46 MB before resampling). Iterating FileSource over them in a fresh interpreter must not grow its
    peak RSS by more than 16 MB: decoding the whole file, as FileSource once did, grows it by 84 MB
    and 156 MB."""
    script = (
        "import resource, sys\n"
        "from edge_runtime.sources import FileSource\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = sum(b.size for b in FileSource(sys.argv[1]).blocks())\n"
        "print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n"
    )
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for rate, channels, seconds in [(SAMPLE_RATE, 1, 600), (48000, 2, 120)]:
        path = tmp_path / f"{seconds}s-{rate}.wav"
        with sf.SoundFile(path, "w", rate, channels, "PCM_16") as fh:
            for start in range(0, seconds, 30):  # noise and a gated tone, written 30 s at a time
                t = start + np.arange(30 * rate) / rate
                x = 0.05 * rng.standard_normal((t.size, channels)) + (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(t) > 0))[:, None]
                fh.write(x.astype(np.float32))
        proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        samples, grown_mb = proc.stdout.split()
        assert int(samples) == seconds * SAMPLE_RATE
        decoded_mb = seconds * rate * channels * 4 / 2**20
        assert float(grown_mb) < 16 < decoded_mb / 2, (grown_mb, decoded_mb)


def test_stream_resampler_matches_whole_signal_resample() -> None:
    """Blocks of any size give the samples of the whole signal resampled at once (what load_audio does)."""
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
    ref = _collect(FileSource(path))
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
