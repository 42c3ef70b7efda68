"""Audio sources for the runtime: each yields float32 mono 16 kHz numpy blocks.

A source is a small object with ``blocks()`` (an iterator of 1-D float32 arrays at
``hbaf.contract.SAMPLE_RATE``), ``close()``, ``name`` and ``dropped_blocks``.
Decoding, down-mixing and resampling are ``hbaf.audio``'s; a source decides where the audio
comes from and how it is served. Three kinds exist:

- ``FileSource``: any file ``hbaf.audio.load_audio`` reads (wav, flac, mp3, ...), decoded
  and resampled block by block (constant memory), optionally paced at wall-clock speed; a
  path that is a stream (a FIFO, ``<(ffmpeg ... -f wav -)``, a character device) is decoded by
  ffmpeg as it arrives.
- ``StdinSource``: raw signed 16-bit little-endian PCM on a byte stream.
- ``MicSource`` (edge_runtime/mic.py): a sounddevice input stream opened at a rate and
  channel count the device supports; the audio callback only copies into a bounded queue
  and counts what it had to drop, it never blocks.

Audio that arrives at another rate is resampled with ``hbaf.audio.StreamResampler``, the
filter ``hbaf.audio.resample`` (and so ``load_audio``) applies to a whole file: a stream
resampled block by block equals the whole signal resampled at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from hbaf.audio import (
    FfmpegReader,
    SoundfileReader,
    StreamResampler,
    check_audio_path,
    is_mp3,
    open_soundfile,
    probe_seconds,
    soundfile_reason,
    to_mono,
    unreadable_audio,
)
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 4000, 384000  # sample rates a source may declare (telephone 8 kHz ... studio 384 kHz)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv", ".aif", ".aiff")


def check_rate(rate: int, flag: str = "--rate") -> int:
    """``rate`` when it is a sample rate audio can have; a one-line error otherwise."""
    if not MIN_RATE <= int(rate) <= MAX_RATE:
        raise HBAFError(f"{flag} {rate}: a sample rate must be between {MIN_RATE} and {MAX_RATE} Hz; "
                        "pass the rate the audio was recorded at (e.g. 16000, 44100 or 48000)")
    return int(rate)


MAX_CHANNELS = 64


def check_channels(channels: int, flag: str = "--channels") -> int:
    """``channels`` when an audio stream can have that many; a one-line error otherwise."""
    if not 1 <= int(channels) <= MAX_CHANNELS:
        raise HBAFError(f"{flag} {channels}: a channel count must be between 1 and {MAX_CHANNELS}; "
                        "pass the number of channels the audio has (1 = mono, 2 = stereo)")
    return int(channels)


MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt", ".safetensors", ".pt", ".pth", ".ckpt")


class AudioSource:
    """Base: ``blocks()`` yields float32 mono 16 kHz arrays; ``close()`` stops it early."""

    name: str = "audio"
    sample_rate: int = SAMPLE_RATE

    def __init__(self) -> None:
        self.dropped_blocks = 0
        self._closed = threading.Event()

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(AudioSource):
    """An audio file, decoded, down-mixed and resampled block by block as it is served: memory
    stays constant whatever the file's length (a 2 h file is never held whole).

    WAV/FLAC/OGG/MP3 are read with soundfile in chunks and resampled with ``StreamResampler``
    (the same result as resampling the whole file at once); other formats stream through an
    ``ffmpeg`` pipe (``-f f32le -ac 1 -ar 16000``). The file is opened and its first chunk decoded
    at construction, so a missing, empty or undecodable file fails before any model is loaded.
    ``realtime=True`` paces the blocks at wall-clock speed, as a microphone would.
    ``blocks()`` may be called again: it reads the file from the start.
    """

    CHUNK_FRAMES = 16384  # decoded per read: 1 s at 16 kHz, 0.34 s at 48 kHz

    def __init__(self, path: str | Path, *, realtime: bool = False, block_size: int = 512) -> None:
        super().__init__()
        if block_size <= 0:
            raise HBAFError(f"block size must be positive, got {block_size}; use e.g. 512")
        self.path = Path(path)
        self.name = str(self.path)
        self.realtime = realtime
        self.block_size = int(block_size)
        self._lock = threading.Lock()
        self._active: SoundfileReader | FfmpegReader | None = None
        self._header_seconds: float | None = None
        self._counted_seconds: float | None = None
        self._probed = False
        self._reader, self._first = self._open()

    def _open(self) -> tuple[SoundfileReader | FfmpegReader, np.ndarray]:
        """(reader, its first chunk, non-empty)."""
        try:
            return self._open_reader()
        except HBAFError as err:
            if self.path.suffix.lower() in MODEL_SUFFIXES and "not a readable audio file" in str(err):
                raise HBAFError(f"--source {self.path} is a model file ({self.path.suffix}), not audio; pass it as --model, "
                                "and a recording (wav, flac, mp3, ...) as --source") from err
            raise

    def _open_reader(self) -> tuple[SoundfileReader | FfmpegReader, np.ndarray]:
        if _is_stream(self.path):  # FIFO, <(process substitution), character device: read once, through ffmpeg
            self._probed = True  # ffprobe would consume the stream
            reader = FfmpegReader(self.path, None, self.CHUNK_FRAMES, stream=True)
            try:
                first = reader.read()
            except BaseException:
                reader.close()
                raise
            if first.size == 0:
                reader.close()
                raise HBAFError(f"--source {self.path} is a stream that ended without audio; send audio into it "
                                "(e.g. ffmpeg ... -f wav -), or pass - for raw 16-bit PCM on stdin")
            return reader, first
        path = check_audio_path(self.path)
        # MP3: ffmpeg when it is there, as libmpg123 (inside soundfile) prints its decoder's complaints
        # about ordinary files (e.g. "part2_3_length ... too large") straight onto stderr
        handle, reason = (None, None) if is_mp3(path) and shutil.which("ffmpeg") else open_soundfile(path)
        if handle is not None:
            reader: SoundfileReader | FfmpegReader = SoundfileReader(handle, path, self.CHUNK_FRAMES)
            try:
                first = reader.read_raw()
            except Exception as err:  # soundfile knows the container but not this content: ffmpeg may
                reader.close()
                reason = f"soundfile: {soundfile_reason(err)}"
            else:
                if first.size == 0:
                    reader.close()
                    raise HBAFError(f"audio file {path} holds no audio samples (a header without data); re-record it or pass another --source")
                self._header_seconds = reader.frames / reader.rate if reader.rate > 0 else None
                return reader, first
        reader = FfmpegReader(path, reason, self.CHUNK_FRAMES)
        try:
            first = reader.read()
        except BaseException:
            reader.close()
            raise
        if first.size == 0:  # ffmpeg ended well but wrote nothing
            reader.close()
            raise unreadable_audio(path, reason or "no audio stream")
        return reader, first

    @property
    def duration(self) -> float | None:
        """Seconds of audio: exact once ``blocks()`` has served the whole file; before that, from
        the header (soundfile formats) or ``ffprobe`` (other formats); None when neither knows."""
        if self._counted_seconds is not None:
            return self._counted_seconds
        if self._header_seconds is None and not self._probed:
            self._probed = True
            self._header_seconds = probe_seconds(self.path)
        return self._header_seconds

    def blocks(self) -> Iterator[np.ndarray]:
        with self._lock:
            reader, first = self._reader, self._first
            self._reader, self._first = None, None
        if reader is None:
            if self.closed:
                return
            reader, first = self._open()
        self._active = reader
        resampler = StreamResampler(reader.rate)
        bs = self.block_size
        carry = np.zeros(0, np.float32)
        served = 0
        t0 = time.perf_counter()
        try:
            chunk: np.ndarray | None = first
            while True:
                if self.closed:
                    return
                if chunk is None:
                    out = resampler.flush()
                else:
                    if not np.all(np.isfinite(chunk)):
                        chunk = np.nan_to_num(chunk, nan=0.0, posinf=1.0, neginf=-1.0)
                    out = resampler.process(chunk)
                if carry.size:
                    out = np.concatenate([carry, out])
                end = out.size if chunk is None else out.size - out.size % bs
                for start in range(0, end, bs):
                    if self.closed:
                        return
                    if self.realtime:
                        delay = t0 + served / SAMPLE_RATE - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    block = out[start : start + bs]
                    served += block.size
                    yield block
                carry = out[end:]
                if chunk is None:
                    break
                nxt = reader.read()
                chunk = nxt if nxt.size else None
            self._counted_seconds = served / SAMPLE_RATE
        finally:
            self._active = None
            reader.close()

    def close(self) -> None:
        super().close()
        with self._lock:
            idle, self._reader, self._first = self._reader, None, None
        if idle is not None:  # opened but never iterated: release the file (or ffmpeg) now
            idle.close()
        active = self._active
        if active is not None:  # being read by another thread: it closes the reader itself
            active.interrupt()


def _is_stream(path: Path) -> bool:
    """True for a FIFO, a pipe (process substitution's /dev/fd/N), a character device or a socket;
    a folder is refused here in one line, a missing path left to ``check_audio_path``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        raise HBAFError(folder_source_error(path))
    return not stat.S_ISREG(mode)


def folder_source_error(path: Path) -> str:
    """The one line for a folder given as ``--source``: it names a few audio files inside."""
    try:
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    except OSError:
        inside = []
    hint = (f" (it holds {len(inside)} audio file(s), e.g. {path / inside[0]})" if inside else " (it holds no audio files)")
    return f"--source {path} is a folder, not an audio file{hint}; pass one audio file, one run per file"


class StdinSource(AudioSource):
    """Raw signed 16-bit little-endian PCM from a byte stream (stdin by default).

    Interleaved ``channels`` at ``rate`` Hz are down-mixed and resampled to 16 kHz mono.
    An incomplete trailing frame (odd byte, partial channel group) is discarded.
    """

    name = "stdin"

    def __init__(
        self,
        stream: BinaryIO | None = None,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        block_size: int = 512,
    ) -> None:
        super().__init__()
        check_rate(rate, "--rate")
        check_channels(channels, "--channels")
        if block_size <= 0:
            raise HBAFError(f"block size must be positive, got {block_size}; use e.g. 512")
        if stream is None:
            stream = sys.stdin.buffer
        self.stream = getattr(stream, "buffer", stream)
        self.rate = int(rate)
        self.channels = int(channels)
        self.block_size = int(block_size)
        self._resampler = StreamResampler(self.rate)
        self._frame_bytes = 2 * self.channels
        self._read_bytes = max(1, round(self.block_size * self.rate / SAMPLE_RATE)) * self._frame_bytes

    def _decode(self, raw: bytes) -> np.ndarray:
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return to_mono(pcm.reshape(-1, self.channels)) if self.channels > 1 else pcm

    def blocks(self) -> Iterator[np.ndarray]:
        carry = b""
        total = 0
        while not self.closed:
            raw = self.stream.read(self._read_bytes)
            if not raw:
                break
            if total == 0 and raw[:4] == b"RIFF":
                raise HBAFError(
                    "stdin carries a WAV file, not raw PCM; pass the file path instead of '-', "
                    "or send raw 16-bit PCM (e.g. arecord -t raw, ffmpeg -f s16le)"
                )
            total += len(raw)
            data = carry + raw
            usable = len(data) - len(data) % self._frame_bytes
            carry = data[usable:]
            if usable:
                out = self._resampler.process(self._decode(data[:usable]))
                if out.size:
                    yield out
        if carry:
            log.warning("stdin ended inside a sample frame; discarded %d trailing byte(s)", len(carry))
        if total == 0 and not self.closed:
            raise HBAFError(
                "no audio on stdin; pipe raw 16-bit PCM, e.g. "
                "arecord -f S16_LE -r 16000 -c 1 -t raw | hbaf-edge run -"
            )
        tail = self._resampler.flush()
        if tail.size:
            yield tail
