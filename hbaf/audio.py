"""Audio in: decoding files, down-mixing to mono and the one resampler, for files and streams.

Everything that turns a recording into float32 mono samples at ``hbaf.contract.SAMPLE_RATE``
lives here; ``hbaf.features`` turns those samples into model inputs, and the runtime's sources
(``edge_runtime.sources``) serve them block by block.

- ``load_audio``: a whole file in memory (training, evaluation, the benchmark);
- ``SoundfileReader`` / ``FfmpegReader``: a file (or a stream, through ffmpeg) chunk by chunk, in
  constant memory (the runtime's ``FileSource``);
- ``StreamResampler``: band-limited resampling block by block; ``resample`` is the same filter
  over a whole signal at once, so a file and a stream of the same audio give the same samples.

WAV/FLAC/OGG/MP3 are read with soundfile (libsndfile); formats it does not know (mp4, m4a, webm,
...) go through an ``ffmpeg`` pipe, which also resamples them (``-ar``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError


def to_mono(wave: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> [n] by averaging channels."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2:
        return wave.mean(axis=1, dtype=np.float32)
    raise HBAFError(f"audio must be [samples] or [samples, channels], got shape {wave.shape}")


# ----------------------------------------------------------------------------- resampling


def _kaiser_lowpass(numtaps: int, cutoff: float) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", 5.0))`` in numpy (equal to ~1e-16):
    importing scipy.signal would cost a source about 75 MB of resident memory."""
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, 5.0)
    return h / h.sum()


class StreamResampler:
    """Band-limited resampling of a mono signal, block by block.

    The polyphase FIR of scipy's ``resample_poly`` (Kaiser-windowed sinc, beta 5,
    ``10 * max(up, down)`` taps each side, output centred on the filter): output sample ``m`` is
    ``sum_i h[p + up*i] * x[b - i]`` with ``j = m*down + half_len``, ``p = j % up``,
    ``b = j // up``. The last few input samples are kept between calls, so block boundaries
    leave no trace: a stream resampled block by block equals the whole signal resampled at once
    (``resample``). The price is a look-ahead of ``half_len / up`` input samples (0.6 ms at
    48 kHz), returned by ``flush()``. 48 kHz -> 16 kHz is an exact decimation by 3 behind an
    anti-alias low-pass.
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


def resample(wave: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A whole mono float signal from ``orig_rate`` to ``target_rate``: ``StreamResampler`` fed
    the signal in one block, so files and streams are resampled by the same filter."""
    if orig_rate <= 0:
        raise HBAFError(f"invalid sample rate {orig_rate}; the audio header is corrupt, re-encode the file")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_rate == target_rate or wave.size == 0:
        return wave
    r = StreamResampler(orig_rate, target_rate)
    return np.concatenate([r.process(wave), r.flush()])


# ----------------------------------------------------------------------------- decoding files


def check_audio_path(path: str | Path) -> Path:
    """``path`` as a Path; HBAFError naming the file when it is missing or empty."""
    path = Path(path)
    if not path.exists():
        raise HBAFError(f"audio file not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise HBAFError(f"audio file is empty (0 bytes): {path}; re-record or remove it")
    return path


def unreadable_audio(path: Path, why: str) -> HBAFError:
    """The one-line error for a file that is not decodable audio."""
    why = " ".join(str(why).split()).rstrip(".") or "no audio stream"
    return HBAFError(f"not a readable audio file: {path} ({why}); convert it to 16 kHz WAV with ffmpeg")


def soundfile_reason(err: BaseException) -> str:
    """libsndfile's message without soundfile's prefix."""
    return str(getattr(err, "error_string", None) or err)


def open_soundfile(path: Path) -> tuple[object, str | None]:
    """Open ``path`` with soundfile (libsndfile) for reading.

    Returns ``(SoundFile, None)`` when it opens; ``(None, None)`` when libsndfile does not
    recognise the format at all (mp4, m4a, webm, ...: ffmpeg's job); ``(None, reason)`` when
    libsndfile recognises the container but cannot read it, e.g. a WAV cut inside its header or
    one whose codec libsndfile lacks (mp2, some ADPCMs). Such a file is offered to ffmpeg as well,
    but when ffmpeg cannot decode it either (or is not installed) the error gives ``reason``.
    """
    try:
        import soundfile as sf
    except (ImportError, OSError):  # no libsndfile: everything goes through ffmpeg
        return None, None
    try:
        # bytes: soundfile would encode a str with the file system encoding, which fails on
        # names that are not valid UTF-8
        return sf.SoundFile(os.fsencode(path)), None
    except Exception as err:  # LibsndfileError (a RuntimeError) or a TypeError/ValueError from odd headers
        if getattr(err, "code", None) == 1:  # SF_ERR_UNRECOGNISED_FORMAT
            return None, None
        return None, f"soundfile: {soundfile_reason(err)}"


def ffmpeg_command(path: Path, rate: int) -> list[str]:
    """ffmpeg decoding ``path`` to float32 little-endian mono at ``rate`` on stdout."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]


def ffmpeg_missing(path: Path, soundfile_reason: str | None) -> HBAFError:
    """The error when a file needs ffmpeg and it is not installed."""
    if soundfile_reason:  # soundfile recognised the file: its reason is the one that matters
        return unreadable_audio(path, soundfile_reason)
    return HBAFError(f"cannot decode {path}: ffmpeg is not installed; apt-get install ffmpeg, or convert it to WAV")


def ffmpeg_decode(path: Path, rate: int, soundfile_reason: str | None = None) -> np.ndarray:
    """The whole of ``path`` decoded by ffmpeg: float32 mono at ``rate``."""
    try:
        proc = subprocess.run(ffmpeg_command(path, rate), capture_output=True, check=False)
    except FileNotFoundError as err:
        raise ffmpeg_missing(path, soundfile_reason) from err
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise unreadable_audio(path, soundfile_reason or (detail[-1] if detail else "no audio stream"))
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio file -> float32 mono at ``target_rate`` (the whole file in memory; the
    runtime's ``FileSource`` streams instead).

    WAV/FLAC/OGG/MP3 go through soundfile; formats it does not know (mp4, m4a, ...) through
    ffmpeg. Raises HBAFError naming the file when it is missing, empty or not audio; for a
    file soundfile recognises but cannot read, the error gives soundfile's reason (ffmpeg is
    tried too, as some WAV codecs are ffmpeg's alone).
    """
    path = check_audio_path(path)
    handle, reason = open_soundfile(path)
    if handle is not None:
        try:
            with handle:
                rate = handle.samplerate
                wave = to_mono(handle.read(dtype="float32"))
        except Exception as err:  # a read error past the header
            reason = f"soundfile: {soundfile_reason(err)}"
    if handle is None or reason:
        wave, rate = ffmpeg_decode(path, target_rate, reason), target_rate
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    return resample(wave, int(rate), target_rate)


def is_mp3(path: Path) -> bool:
    """An MP3 file, by its first bytes (an ID3 tag or an MPEG audio frame header) or its name."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return False
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2) or path.suffix.lower() == ".mp3"


def probe_seconds(path: Path) -> float | None:
    """Duration from ``ffprobe`` (None when it is missing or does not know)."""
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return float(proc.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- decoding chunk by chunk


class SoundfileReader:
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
            raise unreadable_audio(self.path, f"soundfile: {soundfile_reason(err)}, {where}") from err

    def interrupt(self) -> None:
        """Nothing to do: a read of a local file returns promptly (``close()`` is for the reading thread)."""

    def close(self) -> None:
        self.handle.close()


class FfmpegReader:
    """Chunks of any file ffmpeg decodes, through a pipe: float32 mono at ``SAMPLE_RATE`` (ffmpeg resamples)."""

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
                raise HBAFError(f"cannot read audio stream {path} ({err.strerror or err}); check the path and its permissions") from err
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
