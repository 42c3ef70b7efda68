"""The microphone source and the device list (`hbaf-edge devices`), through sounddevice.

``MicSource`` opens an input device at a rate and channel count it supports (16 kHz mono
when it accepts that, else e.g. its 48 kHz stereo default); the audio callback only copies
each block into a bounded queue with ``put_nowait`` and counts what it had to drop, it
never blocks. ``blocks()`` down-mixes and resamples to 16 kHz mono with the same
``StreamResampler`` the file and stdin sources use.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator

import numpy as np

from edge_runtime.sources import AudioSource
from hbaf.audio import StreamResampler, to_mono
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

PROBE_RATES = (8000, 16000, 22050, 44100, 48000)
DEVICES_HINT = "list them with `hbaf-edge devices`"


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
