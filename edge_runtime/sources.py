"""Audio sources for the runtime: each yields float32 mono 16 kHz numpy blocks.

A source is a small object with ``blocks()`` (an iterator of 1-D float32 arrays at
``hbaf.features.SAMPLE_RATE``), ``close()``, ``name`` and ``dropped_blocks``.
Three kinds exist:

- ``FileSource``: any file ``hbaf.features.load_audio`` reads (wav, flac, mp3, ...), decoded
  and resampled block by block (constant memory), optionally paced at wall-clock speed; a
  path that is a stream (a FIFO, ``<(ffmpeg ... -f wav -)``, a character device) is decoded by
  ffmpeg as it arrives.
- ``StdinSource``: raw signed 16-bit little-endian PCM on a byte stream.
- ``MicSource`` (edge_runtime/mic.py): a sounddevice input stream opened at a rate and
  channel count the device supports; the audio callback only copies into a bounded queue
  and counts what it had to drop, it never blocks.

Streams that arrive at another rate are resampled with ``StreamResampler``: the
same polyphase FIR that ``hbaf.features.resample`` (scipy ``resample_poly``) uses,
with its filter history carried from block to block, so a stream resampled block
by block equals the whole signal resampled at once (tested), and 48 kHz -> 16 kHz
is an exact decimation by 3 behind an anti-alias low-pass.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from math import gcd
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from hbaf.errors import HBAFError
from hbaf.features import (
    SAMPLE_RATE,
    check_audio_path,
    ffmpeg_command,
    ffmpeg_missing,
    open_soundfile,
    to_mono,
    unreadable_audio,
)

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


def _kaiser_lowpass(numtaps: int, cutoff: float) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", 5.0))`` in numpy (equal to ~1e-16):
    importing scipy.signal would cost a source about 75 MB of resident memory."""
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, 5.0)
    return h / h.sum()


class StreamResampler:
    """Block-by-block resampling that matches ``hbaf.features.resample`` on the whole signal.

    Polyphase form of scipy's ``resample_poly`` (Kaiser-windowed sinc, beta 5,
    ``10 * max(up, down)`` taps each side, output centred on the filter): output
    sample ``m`` is ``sum_i h[p + up*i] * x[b - i]`` with ``j = m*down + half_len``,
    ``p = j % up``, ``b = j // up``. The last few input samples are kept between
    calls, so block boundaries leave no trace; the price is a look-ahead of
    ``half_len / up`` input samples (0.6 ms at 48 kHz), returned by ``flush()``.
    """

    def __init__(self, orig_rate: int, target_rate: int = SAMPLE_RATE) -> None:
        if orig_rate <= 0 or target_rate <= 0:
            raise HBAFError(f"invalid sample rate {orig_rate} -> {target_rate}; pass a positive rate such as 16000 or 48000")
        self.orig_rate = int(orig_rate)
        self.target_rate = int(target_rate)
        g = gcd(self.orig_rate, self.target_rate)
        self.up = self.target_rate // g
        self.down = self.orig_rate // g
        self.passthrough = self.up == self.down
        if not self.passthrough:
            max_rate = max(self.up, self.down)
            self.half_len = 10 * max_rate
            h = _kaiser_lowpass(2 * self.half_len + 1, 1.0 / max_rate) * self.up
            self.taps = -(-h.size // self.up)
            padded = np.zeros(self.taps * self.up)
            padded[: h.size] = h
            # phases[p, i] = h[p + up * i]
            self.phases = padded.reshape(self.taps, self.up).T.copy()
            # the same taps oldest input first, to dot with a window of the buffer
            self._reversed = np.ascontiguousarray(self.phases[:, ::-1])
        self.reset()

    def reset(self) -> None:
        """Forget all history (start of a new stream)."""
        self._n_in = 0
        self._next_out = 0
        if not self.passthrough:
            self._buf = np.zeros(self.taps - 1, dtype=np.float64)
            self._buf_start = -(self.taps - 1)  # absolute input index of _buf[0]; zeros before the stream

    def _emit(self, m_end: int) -> np.ndarray:
        count = m_end - self._next_out
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        # windows[k] = _buf[k : k + taps], a strided view (no copy). Outputs m and m + up use the
        # same phase and windows `down` apart, so each residue class of m mod up is one
        # matrix-vector product.
        windows = np.lib.stride_tricks.sliding_window_view(self._buf, self.taps)
        y = np.empty(count, dtype=np.float64)
        for r in range(min(self.up, count)):
            j = (self._next_out + r) * self.down + self.half_len
            k0 = j // self.up - (self.taps - 1) - self._buf_start
            n = len(range(r, count, self.up))
            y[r :: self.up] = windows[k0 : k0 + self.down * (n - 1) + 1 : self.down] @ self._reversed[j % self.up]
        self._next_out = m_end
        next_base = (m_end * self.down + self.half_len) // self.up
        keep_from = next_base - (self.taps - 1) - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return y.astype(np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed the next mono block; return every output sample that is now fully determined."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.passthrough:
            self._n_in += x.size
            return x
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        self._n_in += x.size
        # outputs whose newest tap (input index b) has arrived: m*down + half_len < n_in*up
        m_end = max(0, -(-(self._n_in * self.up - self.half_len) // self.down))
        return self._emit(max(m_end, self._next_out))

    def flush(self) -> np.ndarray:
        """End of stream: the remaining outputs (zeros assumed after the last input), as resample_poly."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total = -(-self._n_in * self.up // self.down)
        if total <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        need = ((total - 1) * self.down + self.half_len) // self.up + 1  # inputs up to this index
        have = self._buf_start + self._buf.size
        if need > have:
            self._buf = np.concatenate([self._buf, np.zeros(need - have)])
        return self._emit(total)


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


def _reason(err: BaseException) -> str:
    """libsndfile's message without soundfile's prefix."""
    return str(getattr(err, "error_string", None) or err)


class _SoundfileReader:
    """Chunks of a file soundfile opened: float32, down-mixed to mono, at the file's own rate."""

    def __init__(self, handle: Any, path: Path, chunk_frames: int) -> None:
        self.handle = handle
        self.path = path
        self.rate = int(handle.samplerate)
        self.frames = int(handle.frames)
        self.chunk_frames = chunk_frames
        self.position = 0

    def read_raw(self) -> np.ndarray:
        """The next chunk (empty at the end of the file); soundfile's own exception on a read error."""
        data = self.handle.read(self.chunk_frames, dtype="float32")
        self.position += len(data)
        return to_mono(data)

    def read(self) -> np.ndarray:
        """The next chunk; empty at the end of the file."""
        try:
            return self.read_raw()
        except Exception as err:  # libsndfile gives up past the header (a damaged FLAC frame, ...)
            where = f"{self.position / max(self.rate, 1):.1f} s into the file"
            raise unreadable_audio(self.path, f"soundfile: {_reason(err)}, {where}") from err

    def interrupt(self) -> None:
        """Nothing to do: a read of a local file returns promptly (``close()`` is for the reading thread)."""

    def close(self) -> None:
        self.handle.close()


class _FfmpegReader:
    """Chunks of any file ffmpeg decodes, through a pipe: float32 mono at 16 kHz (ffmpeg resamples)."""

    rate = SAMPLE_RATE

    def __init__(self, path: Path, soundfile_reason: str | None, chunk_frames: int, *, stream: bool = False) -> None:
        self.path = path
        self.soundfile_reason = soundfile_reason
        self.chunk_bytes = 4 * chunk_frames
        self._interrupted = False
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on it
        # a stream (FIFO, process substitution, device) is opened here and handed to ffmpeg as its
        # stdin: /dev/fd/N of this process does not exist in the child, and it can be read only once
        cmd, stdin = ffmpeg_command(path, SAMPLE_RATE), subprocess.DEVNULL
        if stream:
            cmd = [("pipe:0" if arg == str(path) else arg) for arg in cmd]
            try:
                stdin = open(path, "rb")  # noqa: SIM115 (handed to the child, closed below)
            except OSError as err:
                self._stderr.close()
                raise HBAFError(f"cannot read --source {path} ({err.strerror or err}); check the path and its permissions") from err
        try:
            self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=self._stderr)
        except FileNotFoundError as err:
            self._stderr.close()
            raise ffmpeg_missing(path, soundfile_reason) from err
        finally:
            if stream:
                stdin.close()

    def read(self) -> np.ndarray:
        """The next chunk; empty at the end of the stream, after checking how ffmpeg ended."""
        raw = self.proc.stdout.read(self.chunk_bytes) if self.proc.stdout else b""
        usable = len(raw) - len(raw) % 4
        if usable:
            return np.frombuffer(raw[:usable], dtype="<f4").astype(np.float32)
        if self.proc.wait() != 0 and not self._interrupted:
            raise self._failure()
        return np.zeros(0, np.float32)

    def _failure(self) -> HBAFError:
        self._stderr.seek(0)
        detail = self._stderr.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
        return unreadable_audio(self.path, self.soundfile_reason or (detail[-1] if detail else "no audio stream"))

    def interrupt(self) -> None:
        """Stop ffmpeg (from any thread): a read blocked on the pipe then returns, as at the end."""
        self._interrupted = True
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def close(self) -> None:
        self.interrupt()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc.wait()
        self._stderr.close()


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
        self._active: _SoundfileReader | _FfmpegReader | None = None
        self._header_seconds: float | None = None
        self._counted_seconds: float | None = None
        self._probed = False
        self._reader, self._first = self._open()

    def _open(self) -> tuple[_SoundfileReader | _FfmpegReader, np.ndarray]:
        """(reader, its first chunk, non-empty)."""
        try:
            return self._open_reader()
        except HBAFError as err:
            if self.path.suffix.lower() in MODEL_SUFFIXES and "not a readable audio file" in str(err):
                raise HBAFError(f"--source {self.path} is a model file ({self.path.suffix}), not audio; pass it as --model, "
                                "and a recording (wav, flac, mp3, ...) as --source") from err
            raise

    def _open_reader(self) -> tuple[_SoundfileReader | _FfmpegReader, np.ndarray]:
        if _is_stream(self.path):  # FIFO, <(process substitution), character device: read once, through ffmpeg
            self._probed = True  # ffprobe would consume the stream
            reader = _FfmpegReader(self.path, None, self.CHUNK_FRAMES, stream=True)
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
        handle, reason = (None, None) if _is_mp3(path) and shutil.which("ffmpeg") else open_soundfile(path)
        if handle is not None:
            reader: _SoundfileReader | _FfmpegReader = _SoundfileReader(handle, path, self.CHUNK_FRAMES)
            try:
                first = reader.read_raw()
            except Exception as err:  # soundfile knows the container but not this content: ffmpeg may
                reader.close()
                reason = f"soundfile: {_reason(err)}"
            else:
                if first.size == 0:
                    reader.close()
                    raise HBAFError(f"audio file {path} holds no audio samples (a header without data); re-record it or pass another --source")
                self._header_seconds = reader.frames / reader.rate if reader.rate > 0 else None
                return reader, first
        reader = _FfmpegReader(path, reason, self.CHUNK_FRAMES)
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
            self._header_seconds = _probe_seconds(self.path)
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


def _is_mp3(path: Path) -> bool:
    """An MP3 file, by its first bytes (an ID3 tag or an MPEG audio frame header) or its name."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return False
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2) or path.suffix.lower() == ".mp3"


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


def _probe_seconds(path: Path) -> float | None:
    """Duration from ``ffprobe`` (None when it is missing or does not know)."""
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return float(proc.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


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
