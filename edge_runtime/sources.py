"""Audio sources for the runtime: each yields float32 mono 16 kHz numpy blocks.

A source is a small object with ``blocks()`` (an iterator of 1-D float32 arrays at
``hbaf.features.SAMPLE_RATE``), ``close()``, ``name`` and ``dropped_blocks``.
Three kinds exist:

- ``FileSource``: any file ``hbaf.features.load_audio`` reads (wav, flac, mp3, ...),
  optionally paced at wall-clock speed.
- ``StdinSource``: raw signed 16-bit little-endian PCM on a byte stream.
- ``MicSource``: a sounddevice input stream opened at a rate and channel count the
  device supports; the audio callback only copies into a bounded queue and counts
  what it had to drop, it never blocks.

Streams that arrive at another rate are resampled with ``StreamResampler``: the
same polyphase FIR that ``hbaf.features.resample`` (scipy ``resample_poly``) uses,
with its filter history carried from block to block, so a stream resampled block
by block equals the whole signal resampled at once (tested), and 48 kHz -> 16 kHz
is an exact decimation by 3 behind an anti-alias low-pass.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from math import gcd
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE, load_audio, to_mono

log = logging.getLogger(__name__)

PROBE_RATES = (8000, 16000, 22050, 44100, 48000)
DEVICES_HINT = "list them with `hbaf-edge devices`"


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
            from scipy.signal import firwin

            max_rate = max(self.up, self.down)
            self.half_len = 10 * max_rate
            h = firwin(2 * self.half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
            self.taps = -(-h.size // self.up)
            padded = np.zeros(self.taps * self.up)
            padded[: h.size] = h
            # phases[p, i] = h[p + up * i]
            self.phases = padded.reshape(self.taps, self.up).T.copy()
        self.reset()

    def reset(self) -> None:
        """Forget all history (start of a new stream)."""
        self._n_in = 0
        self._next_out = 0
        if not self.passthrough:
            self._buf = np.zeros(self.taps - 1, dtype=np.float64)
            self._buf_start = -(self.taps - 1)  # absolute input index of _buf[0]; zeros before the stream

    def _emit(self, m_end: int) -> np.ndarray:
        m = np.arange(self._next_out, m_end, dtype=np.int64)
        if m.size == 0:
            return np.zeros(0, dtype=np.float32)
        j = m * self.down + self.half_len
        base = j // self.up - self._buf_start
        idx = base[:, None] - np.arange(self.taps)[None, :]
        y = np.einsum("ij,ij->i", self.phases[j % self.up], self._buf[idx])
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


class FileSource(AudioSource):
    """An audio file, decoded whole at construction (errors surface early), served in blocks.

    ``realtime=True`` paces the blocks at wall-clock speed, as a microphone would.
    """

    def __init__(self, path: str | Path, *, realtime: bool = False, block_size: int = 512) -> None:
        super().__init__()
        if block_size <= 0:
            raise HBAFError(f"block size must be positive, got {block_size}; use e.g. 512")
        self.path = Path(path)
        self.name = str(self.path)
        self.realtime = realtime
        self.block_size = int(block_size)
        self.audio = load_audio(self.path)
        if self.audio.size == 0:
            raise HBAFError(f"audio file {self.path} holds no audio samples (a header without data); re-record it or pass another --source")

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def blocks(self) -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        for start in range(0, self.audio.size, self.block_size):
            if self.closed:
                return
            if self.realtime:
                delay = t0 + start / SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield self.audio[start : start + self.block_size]


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
        if channels <= 0:
            raise HBAFError(f"stdin channel count must be positive, got {channels}; pass e.g. --channels 1")
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


def import_sounddevice() -> Any:
    """Import sounddevice lazily, turning a missing PortAudio into a one-line fix."""
    try:
        import sounddevice
    except ImportError as err:
        raise HBAFError("microphone input needs the sounddevice package; pip install sounddevice") from err
    except OSError as err:
        raise HBAFError(
            f"PortAudio library not found ({err}); apt-get install libportaudio2, or use a file or '-' (stdin) as the source"
        ) from err
    return sounddevice


def _settings_supported(sd: Any, device: int, rate: int, channels: int) -> bool:
    try:
        sd.check_input_settings(device=device, samplerate=rate, channels=channels, dtype="float32")
    except Exception:  # sounddevice raises PortAudioError or ValueError for unsupported settings
        return False
    return True


def list_input_devices() -> list[dict]:
    """Input devices as dicts: index, name, max_input_channels, default_samplerate,
    supported_rates (of 8000/16000/22050/44100/48000, mono or native channel count), is_default."""
    sd = import_sounddevice()
    try:
        devices = list(sd.query_devices())
    except Exception as err:
        raise HBAFError(f"cannot query audio devices ({err}); check that the sound system is running and {DEVICES_HINT}") from err
    try:
        default_in = int(sd.default.device[0])
    except Exception:
        default_in = -1
    out = []
    for index, dev in enumerate(devices):
        max_ch = int(dev.get("max_input_channels", 0))
        if max_ch <= 0:
            continue
        channel_options = sorted({1, min(max_ch, 2)})
        rates = [r for r in PROBE_RATES if any(_settings_supported(sd, index, r, c) for c in channel_options)]
        out.append(
            {
                "index": index,
                "name": str(dev.get("name", f"device {index}")),
                "max_input_channels": max_ch,
                "default_samplerate": float(dev.get("default_samplerate", 0.0)),
                "supported_rates": rates,
                "is_default": index == default_in,
            }
        )
    return out


def format_devices(devices: list[dict] | None = None) -> str:
    """The table ``hbaf-edge devices`` prints."""
    if devices is None:
        devices = list_input_devices()
    if not devices:
        return "no audio input devices found; connect a microphone (on Linux check `arecord -l`) or use a file or '-' (stdin)"
    lines = [f"{'':1} {'index':>5}  {'name':<40} {'ch':>3} {'default Hz':>10}  supported Hz"]
    for d in devices:
        rates = ", ".join(str(r) for r in d["supported_rates"]) or "none of the probed rates"
        star = "*" if d.get("is_default") else ""
        lines.append(
            f"{star:1} {d['index']:>5}  {d['name'][:40]:<40} {d['max_input_channels']:>3} {d['default_samplerate']:>10.0f}  {rates}"
        )
    lines.append("* = default input; pass the index with --device. Devices that lack 16000 are captured at a rate they support and resampled.")
    return "\n".join(lines)


class MicSource(AudioSource):
    """A microphone through sounddevice.

    ``start()`` (called by ``blocks()`` if needed; call it early to fail early) picks the
    device and opens it at 16 kHz mono when the device accepts that, else at a rate and
    channel count it does accept (its default rate, e.g. 48 kHz, often stereo); the
    consumer down-mixes and resamples to 16 kHz. The audio callback copies each block
    into a bounded queue with ``put_nowait``: when the consumer falls behind, blocks are
    dropped and counted in ``dropped_blocks``; PortAudio's own overflow flags are
    counted in ``overflows``. ``samplerate``/``channels`` force the capture format.

    After ``close()``, ``blocks()`` yields what was already captured and ends.
    """

    STALL_SECONDS = 3.0

    def __init__(
        self,
        device: int | str | None = None,
        *,
        block_size: int = 512,
        queue_blocks: int = 64,
        samplerate: int | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if block_size <= 0 or queue_blocks <= 0:
            raise HBAFError(f"block_size and queue_blocks must be positive, got {block_size} and {queue_blocks}")
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        self.device = device
        self.block_size = int(block_size)
        self.queue_blocks = int(queue_blocks)
        self.samplerate = samplerate
        self.channels = channels
        self.name = "mic" if device is None else f"mic:{device}"
        self.overflows = 0
        self.status_flags = 0
        self.callbacks = 0
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=self.queue_blocks)
        self._stream: Any = None
        self._finished = threading.Event()
        self._reported = False
        self._resampler = StreamResampler(samplerate) if samplerate else None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """Audio-thread callback: count flags, copy, ``put_nowait``; never blocks, never logs."""
        self.callbacks += 1
        if status:
            self.status_flags += 1
            if getattr(status, "input_overflow", False):
                self.overflows += 1
        try:
            self._queue.put_nowait(np.array(indata, dtype=np.float32, copy=True))
        except queue.Full:
            self.dropped_blocks += 1

    def _on_finished(self) -> None:
        self._finished.set()

    def _disappeared(self) -> HBAFError:
        which = "default" if self.device is None else self.device
        return HBAFError(f"input device {which} disappeared; check the cable or pick another with hbaf-edge devices")

    def _pick_format(self, sd: Any, index: int, info: dict) -> tuple[int, int]:
        max_ch = int(info["max_input_channels"])
        native = int(round(float(info.get("default_samplerate") or 0))) or 48000
        rates = [self.samplerate] if self.samplerate else [SAMPLE_RATE, native, 48000, 44100, 32000, 22050]
        chans = [self.channels] if self.channels else [1, min(max_ch, 2), max_ch]
        for rate in dict.fromkeys(rates):
            for ch in dict.fromkeys(chans):
                if _settings_supported(sd, index, int(rate), int(ch)):
                    return int(rate), int(ch)
        raise HBAFError(
            f"input device {index} ({info['name']}) accepts none of rates {list(dict.fromkeys(rates))} "
            f"with channels {list(dict.fromkeys(chans))}; {DEVICES_HINT} and pick another"
        )

    def _resolve_device(self, sd: Any) -> tuple[int, dict]:
        try:
            devices = list(sd.query_devices())
        except Exception as err:
            raise HBAFError(f"cannot query audio devices ({err}); check the sound system, then {DEVICES_HINT}") from err
        if not any(int(d.get("max_input_channels", 0)) > 0 for d in devices):
            raise HBAFError("no audio input device found; connect a microphone and check `hbaf-edge devices`, or use a file or '-' (stdin)")
        try:
            info = sd.query_devices(self.device, kind="input")
        except Exception as err:
            if self.device is None:  # no default input set: take the first device that has inputs
                info = next(d for d in devices if int(d.get("max_input_channels", 0)) > 0)
            else:
                raise HBAFError(f"input device {self.device!r} not found or has no inputs ({err}); {DEVICES_HINT} and pass --device INDEX") from err
        index = int(info.get("index", devices.index(info) if info in devices else 0))
        return index, dict(info)

    def start(self) -> None:
        """Pick the device and capture format and start the stream (idempotent)."""
        if self._stream is not None or self.closed:
            return
        sd = import_sounddevice()
        index, info = self._resolve_device(sd)
        rate, channels = self._pick_format(sd, index, info)
        self.device, self.samplerate, self.channels = index, rate, channels
        self.name = f"mic:{index} ({info.get('name', '')})"
        self._resampler = StreamResampler(rate)
        blocksize = max(1, round(self.block_size * rate / SAMPLE_RATE))
        try:
            stream = sd.InputStream(
                device=index,
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=blocksize,
                callback=self._callback,
                finished_callback=self._on_finished,
            )
            stream.start()
        except Exception as err:
            raise HBAFError(f"cannot open input device {index} at {rate} Hz x {channels} ch ({err}); {DEVICES_HINT} and pick another") from err
        self._stream = stream
        log.info("capturing %s at %d Hz, %d channel(s), %d frames per block", self.name, rate, channels, blocksize)

    def _convert(self, chunk: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            raise HBAFError("microphone capture format unknown; call start() or pass samplerate and channels")
        mono = to_mono(chunk) if chunk.ndim == 2 and chunk.shape[1] > 1 else np.asarray(chunk, np.float32).reshape(-1)
        return self._resampler.process(mono)

    def _check_alive(self, last_data: float) -> None:
        if self._stream is None or self.closed:
            return
        try:
            active = bool(self._stream.active)
        except Exception as err:
            raise self._disappeared() from err
        if self._finished.is_set() or not active or time.monotonic() - last_data > self.STALL_SECONDS:
            raise self._disappeared()

    def blocks(self) -> Iterator[np.ndarray]:
        if self._stream is None and not self.closed:
            self.start()
        last_data = time.monotonic()
        try:
            while True:
                try:
                    chunk = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self.closed:
                        break
                    self._check_alive(last_data)
                    continue
                last_data = time.monotonic()
                out = self._convert(chunk)
                if out.size:
                    yield out
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail.size:
                    yield tail
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # the device may already be gone; nothing left to release
                log.debug("closing the input stream failed", exc_info=True)
        if (self.dropped_blocks or self.overflows) and not self._reported:
            self._reported = True
            log.warning("%s: %d block(s) dropped (consumer too slow), %d input overflow(s)", self.name, self.dropped_blocks, self.overflows)


def open_source(spec: str, **kw: Any) -> AudioSource:
    """``"mic"`` / ``"mic:N"`` -> MicSource, ``"-"`` -> StdinSource, anything else -> FileSource."""
    spec = str(spec)
    if spec == "mic" or spec.startswith("mic:"):
        device = spec[4:] or None
        if device is not None:
            kw.setdefault("device", device)
        return MicSource(**kw)
    if spec == "-":
        return StdinSource(**kw)
    return FileSource(spec, **kw)
