"""The Python API: ``EmotionStream``, emotions of speech as it comes, for programs.

::

    from edge_runtime import EmotionStream

    with EmotionStream(on_event=print) as stream:        # the options of `hbaf-edge run` as keywords
        for samples in capture():                        # numpy int16/int32/float, [n] or [n, channels]
            stream.feed(samples, 48000)                  # any sample rate
    print(stream.summary.format())

    for event in stream_file("call.wav"):                # a file, read to its end
        print(event.emotion, event.text)

A stream is the live pipeline of ``hbaf-edge run`` (edge_runtime/pipeline.py), built from one
``RunOptions`` by ``build_pipeline``; the command line itself runs through it. Its events are
``edge_runtime.events.Event``, the objects the JSON lines are written from. Audio given to
``feed()`` is down-mixed and resampled to 16 kHz with the one stream resampler
(``hbaf.audio.StreamResampler``) and read like a file: when the pipeline is behind, ``feed()``
waits (memory stays bounded) and nothing is dropped. A stream made ``from_microphone`` is live:
it never waits, and what it cannot keep up with is dropped and counted in the summary.
"""

from __future__ import annotations

import logging
import numbers
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edge_runtime.events import Event, EventWriter
from edge_runtime.options import RunOptions, build_pipeline
from edge_runtime.sources import MAX_CHANNELS, AudioSource, check_channels, check_rate
from edge_runtime.summary import Summary
from hbaf.audio import StreamResampler, to_mono
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

_END = object()
BLOCK = 512  # samples at 16 kHz per block handed to the pipeline, as the file and stdin sources serve them
_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
_FLOAT_PEAK = 64.0  # float samples louder than this are integer PCM in a float array


class _FedSource(AudioSource):
    """The source of a stream fed by ``EmotionStream.feed()``: 16 kHz mono blocks in a bounded
    queue. After ``close()`` (a stop), ``blocks()`` serves what was already fed and ends."""

    name = "feed()"

    def __init__(self, queue_blocks: int = 64) -> None:
        super().__init__()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)

    def put(self, item: Any, ended: Callable[[], bool]) -> bool:
        """Queue ``item``, waiting for room; False when the pipeline ended meanwhile."""
        while not ended():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def blocks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.closed:
                    return
                continue
            if item is _END:
                return
            yield item


def _sample_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or rate != int(rate):
        raise HBAFError(f"feed() rate {rate!r} is not a whole number of samples per second; pass the rate the audio "
                        "was recorded at, e.g. stream.feed(samples, 48000)")
    return check_rate(int(rate), "feed() rate")


def _mono(samples: Any) -> np.ndarray:
    """``samples`` ([n] or [n, channels]; int16, int32 or float in [-1, 1]) as float32 mono."""
    a = np.asarray(samples)
    if a.dtype in _SCALE:
        a = a.astype(np.float32) / _SCALE[a.dtype]
    elif a.dtype.kind != "f":
        raise HBAFError(f"feed() takes int16, int32 or float samples, got {a.dtype}; convert them first, "
                        "e.g. samples.astype(np.float32) scaled to [-1, 1]")
    if a.ndim == 2 and a.shape[1] > MAX_CHANNELS >= a.shape[0]:
        raise HBAFError(f"feed() got samples of shape {a.shape}, which looks like [channels, n]; pass [n, channels] "
                        "(frames first): feed(samples.T, rate)")
    if a.ndim not in (1, 2) or (a.ndim == 2 and a.size and not 1 <= a.shape[1] <= MAX_CHANNELS):
        raise HBAFError(f"feed() takes samples of shape [n] or [n, channels] with 1..{MAX_CHANNELS} channels, got shape "
                        f"{a.shape}; reshape them, e.g. samples.reshape(-1) for mono")
    if a.size == 0:
        return np.zeros(0, dtype=np.float32)
    if not np.isfinite(a).all():
        raise HBAFError("feed() got samples that are NaN or infinite; replace them first, e.g. np.nan_to_num(samples)")
    peak = float(np.abs(a).max())
    if peak > _FLOAT_PEAK:
        raise HBAFError(f"feed() got float samples reaching {peak:.0f}, but float audio lies in [-1, 1]; "
                        "pass 16-bit PCM as int16 (samples.astype(np.int16)), or divide by 32768")
    return to_mono(a)


class EmotionStream:
    """Speech in, one ``Event`` per utterance out.

    ``EmotionStream(model=None, asr=None, *, options=None, on_event=None, output=None, **fields)``:
    ``model`` and ``asr`` (None: the packaged ones) and any other field of ``RunOptions`` as a
    keyword (``asr_beam=1``, ``min_confidence=0.5``, ...), over ``options`` when given. The models
    load and warm up here. ``on_event(event)`` is called in the pipeline's worker thread as each
    event is made (an exception it raises stops the stream and comes back from ``close()``);
    without it ``events()`` hands them out. ``output``: also append the events as JSON lines to
    this file, as ``hbaf-edge run --output`` does.

    ``source`` (an ``edge_runtime.sources.AudioSource``) is read instead of fed audio, and
    ``writer`` (an ``EventWriter``) replaces ``output``: ``hbaf-edge run`` passes its own.

    ``feed(samples, rate)`` gives it audio; ``close()`` ends the input, waits for the last
    event and returns the ``Summary`` (also ``summary``); ``with`` closes it at the end of the
    block. ``from_file`` and ``from_microphone`` make a stream that reads a source instead;
    ``stop()`` and ``reset_memory()`` work from any thread.
    """

    def __init__(self, model: str | Path | None = None, asr: str | None = None, *, options: RunOptions | None = None,
                 on_event: Callable[[Event], Any] | None = None, output: str | Path | None = None,
                 source: AudioSource | None = None, writer: EventWriter | None = None, **overrides: Any) -> None:
        named = {k: v for k, v in (("model", model), ("asr", asr)) if v is not None}
        try:
            self.options = RunOptions.with_overrides(options, **named, **overrides).check()
            if on_event is not None and not callable(on_event):
                raise HBAFError(f"on_event must be a function that takes an Event, got {type(on_event).__name__}")
        except HBAFError:
            if source is not None:  # opened by from_file / from_microphone: release it
                source.close()
            raise
        self._on_event = on_event
        self._fed = source is None
        self.source: AudioSource = _FedSource() if source is None else source
        self._own_writer = writer is None
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._resampler: StreamResampler | None = None
        self._carry = np.zeros(0, dtype=np.float32)
        self.summary: Summary | None = None
        try:
            self.writer = writer if writer is not None else EventWriter(output, stdout_format="none", protect=self._protected())
            self.pipeline = build_pipeline(self.source, self.writer, self.options)
            self.pipeline.on_event = self._deliver
            self.pipeline.prepare()
        except BaseException:
            self.source.close()
            if self._own_writer and hasattr(self, "writer"):
                self.writer.close()
            raise

    def _protected(self) -> list[tuple[str, Path]]:
        """The stream's own inputs, which ``output`` must not be."""
        found = [("the model (model=)", Path(self.options.model).expanduser())] if self.options.model else []
        path = getattr(self.source, "path", None)
        return found + ([("the audio file of the stream", Path(path))] if path is not None else [])

    # -- sources

    @classmethod
    def from_file(cls, path: str | Path, *, realtime: bool = False, **kwargs: Any) -> EmotionStream:
        """A stream that reads an audio file (wav, flac, mp3, ... at any rate), as fast as it can
        or, with ``realtime``, at wall-clock speed like a microphone; ``kwargs`` as for the class."""
        from edge_runtime.sources import FileSource

        file = Path(path).expanduser()
        if not file.exists():
            raise HBAFError(f"{path}: no such file; pass an audio file (wav, flac, mp3, ...)")
        return cls(source=FileSource(file, realtime=realtime), **kwargs)

    @classmethod
    def from_microphone(cls, device: int | str | None = None, *, rate: int | None = None, channels: int | None = None,
                        **kwargs: Any) -> EmotionStream:
        """A live stream from a microphone (``device``: an index or name, see ``hbaf-edge devices``;
        None: the default one); ``rate``/``channels`` force the capture format. It runs until
        ``stop()`` or ``close()``."""
        from edge_runtime.mic import MicSource

        if rate is not None:
            check_rate(rate, "rate")
        if channels is not None:
            check_channels(channels, "channels")
        return cls(source=MicSource(device, samplerate=rate, channels=channels), **kwargs)

    # -- input

    def feed(self, samples: Any, rate: int) -> None:
        """Give the stream audio: ``samples`` [n] or [n, channels] (int16, int32, or float in
        [-1, 1]) at ``rate`` Hz; any rate and channel count, in pieces of any size. Waits while
        the pipeline is behind."""
        if not self._fed:
            raise HBAFError(f"feed() is for a stream made without a source; this one reads {self.source.name}: "
                            "make it with EmotionStream(...) to feed it audio")
        if self._closed:
            raise HBAFError("feed() after close(): this stream has ended; make a new EmotionStream for more audio")
        if self._done.is_set() or self.pipeline.stopped_by is not None:
            self._raise_ended()
        rate = _sample_rate(rate)
        mono = _mono(samples)
        if not mono.size:
            return
        self._start()
        ok = True
        if self._resampler is not None and self._resampler.orig_rate != rate:  # a new rate: finish the old one's tail
            ok = self._push(self._resampler.flush())
            self._resampler = None
        if self._resampler is None:
            self._resampler = StreamResampler(rate)
        if not (ok and self._push(self._resampler.process(mono))):
            self._raise_ended()

    def _push(self, audio: np.ndarray, *, last: bool = False) -> bool:
        """16 kHz audio to the pipeline in blocks of ``BLOCK`` samples (``last``: the rest too);
        False when the pipeline has ended."""
        audio = np.concatenate([self._carry, audio]) if self._carry.size else audio
        end = audio.size if last else audio.size - audio.size % BLOCK
        self._carry = audio[end:]
        source = self._fed_source
        return all(source.put(audio[start : start + BLOCK], self._done.is_set) for start in range(0, end, BLOCK))

    @property
    def _fed_source(self) -> _FedSource:
        assert isinstance(self.source, _FedSource)
        return self.source

    def _raise_ended(self) -> None:
        if self._error is not None:
            raise self._error
        raise HBAFError(f"this stream has ended (stopped by {self.pipeline.stopped_by or 'its source'}); "
                        "make a new EmotionStream for more audio")

    # -- output

    def _deliver(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        else:
            self._events.put(event)

    def events(self, wait: bool = True) -> Iterator[Event]:
        """The events in order, as they come. ``wait``: until the stream has ended (after
        ``close()``, or when its source ends); otherwise only those ready now. The error that
        stopped the stream, if any, is raised after the last event."""
        if self._on_event is not None:
            raise HBAFError("this stream hands its events to on_event; make it without on_event to iterate events()")
        self._start()
        while True:
            try:
                item = self._events.get(timeout=0.1) if wait else self._events.get_nowait()
            except queue.Empty:
                if wait:
                    continue
                return
            if item is _END:
                self._events.put(_END)  # a later call ends too
                if self._error is not None:
                    raise self._error
                return
            yield item

    # -- running

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run_pipeline, name="hbaf-stream", daemon=True)
                self._thread.start()

    def _run_pipeline(self) -> None:
        try:
            self.summary = self.pipeline.run()
        except BaseException as err:  # raised again by close(), events() and feed()
            self.summary, self._error = self.pipeline.summary, err
        finally:
            self._done.set()
            self._events.put(_END)

    def run(self) -> Summary:
        """Read the source to its end (or until ``stop()``) in this thread and return the summary;
        signals reach this thread's handlers meanwhile (``hbaf-edge run`` works this way)."""
        if self._fed:
            raise HBAFError("run() reads a source to its end; a stream without one ends at close(): feed() it, then close()")
        with self._lock:
            if self._thread is not None:
                raise HBAFError("run() on a stream that is already running; call close() to wait for it")
            self._thread = threading.current_thread()
        self._closed = True
        self._run_pipeline()
        return self.close()

    def stop(self, reason: str = "stop") -> None:
        """Stop the source (what was captured is still recognised); a second call abandons the rest."""
        self.pipeline.stop(reason)

    def reset_memory(self) -> None:
        """Start a new dialogue at the next utterance."""
        self.pipeline.reset_memory()

    def close(self) -> Summary:
        """End the input and return the summary once the last event is out. Fed audio is
        recognised to its end (the utterance in progress ends there); a file or microphone
        stops where it is. Closing again returns the same summary."""
        if not self._closed:
            self._closed = True
            self._start()
            if not self._fed:
                self.pipeline.stop("close")
            elif self._push(self._resampler.flush() if self._resampler is not None else self._carry[:0], last=True):
                self._fed_source.put(_END, self._done.is_set)
        while not self._done.wait(0.1):
            pass
        if self._own_writer:
            self.writer.close()
        if self._error is not None:
            raise self._error
        assert self.summary is not None
        return self.summary

    def __enter__(self) -> EmotionStream:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # leaving on an error (or Ctrl-C, or a generator closed early): stop, and let that error through
            self.stop("SIGINT" if isinstance(exc, KeyboardInterrupt) else "error" if isinstance(exc, Exception) else "close")
            self.close()
        except Exception:
            log.debug("closing the stream after an error failed", exc_info=True)


def stream_file(path: str | Path, **kwargs: Any) -> Iterator[Event]:
    """The events of an audio file as they come, the whole file read; ``kwargs`` as for
    ``EmotionStream.from_file``."""
    with EmotionStream.from_file(path, **kwargs) as stream:
        yield from stream.events()


def stream_microphone(device: int | str | None = None, **kwargs: Any) -> Iterator[Event]:
    """The events of a microphone as they come, until the loop ends (``break``, Ctrl-C); the
    utterance in progress is still recognised. ``kwargs`` as for ``EmotionStream.from_microphone``."""
    with EmotionStream.from_microphone(device, **kwargs) as stream:
        yield from stream.events()
