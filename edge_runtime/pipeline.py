"""The live pipeline: source -> VAD segmenter -> ASR + features + fusion -> events.

Three threads joined by two bounded queues, and for live input a fourth that speculates::

    source thread     source.blocks() -> audio queue           (blocks of 16 kHz mono, arrival time)
    segmenter thread  audio queue -> Segmenter -> utterance queue
                      during the hangover: the utterance's samples -> speculation thread
    speculation       ASR + features of those samples, ahead of the VAD's decision (speculate.py)
    worker thread     utterance queue -> UtteranceWorker (worker.py: ASR + features or the
                      speculation's result, memory, fusion -> Event) -> writer, on_event

The pieces live beside what they make: events and their assembly in events.py, the counters
beside the summary (summary.py ``RunCounters``), the settings and the wiring in options.py
(``RunOptions``, ``build_pipeline``), the public API in stream.py.

Each event's ``latency_ms`` breaks down what the speaker waits after their last word (``STAGES``);
the block arrival times turn the VAD's stream position of the last voiced sample into wall time.

Nothing here can block a microphone's audio callback: the callback only fills the
source's own bounded queue. For a live source (a microphone, a file paced in real
time) a full queue drops the newest item and counts it (``dropped_blocks``,
``dropped_utterances``), so a processor slower than real time never makes memory
grow. A file read as fast as possible is not live: there the queues apply
back-pressure instead and nothing is dropped.

``reset_memory()`` (SIGUSR1 through the command line) starts a new dialogue at the
next utterance. ``stop()`` (Ctrl-C / SIGTERM through the command line) closes the source; audio
already captured is segmented, the utterance in progress is closed, queued
utterances are finished, and ``run()`` returns the ``Summary``. A second ``stop()``
abandons queued utterances (counted as dropped).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.events import Event, EventWriter
from edge_runtime.memory import DialogueMemory
from edge_runtime.speculate import Speculator
from edge_runtime.summary import RunCounters, Summary
from edge_runtime.worker import QueuedUtterance, UtteranceWorker
from hbaf.errors import HBAFError
from hbaf.contract import SAMPLE_RATE
from hbaf.text import Tokenizer

__all__ = ["Pipeline", "is_live"]
log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker on both queues
STOP_GRACE_S = 0.5  # after stop(), how long the segmenter waits for a source that is stuck in a read


def is_live(source: Any) -> bool:
    """A microphone or a file paced in real time: it must never wait for the consumer."""
    from edge_runtime.mic import MicSource

    return isinstance(source, MicSource) or bool(getattr(source, "realtime", False))


class _Arrivals:
    """When each stretch of the stream reached the pipeline: (samples so far, perf_counter) per
    block, for the last ``keep`` blocks, so that a stream position can be turned into the wall
    time its audio arrived (for a microphone or a paced file: when it was spoken)."""

    def __init__(self, keep: int = 4096) -> None:
        self._ends: deque[tuple[int, float]] = deque(maxlen=keep)
        self.samples = 0

    def add(self, n: int, at: float) -> None:
        self.samples += n
        self._ends.append((self.samples, at))

    def time_of(self, sample: int) -> float:
        """Arrival time of the block holding ``sample`` (the oldest kept one if it is older)."""
        for end, at in self._ends:
            if end > sample:
                return at
        return self._ends[-1][1] if self._ends else time.perf_counter()


def _put(q: queue.Queue, item: Any, *, drop: bool, abort: threading.Event) -> bool:
    """Put ``item``: with ``drop``, give up at once when ``q`` is full (returns False); else wait
    for room until ``abort``."""
    if drop:
        try:
            q.put_nowait(item)
            return True
        except queue.Full:
            return False
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _put_end(q: queue.Queue) -> None:
    """The end marker always gets in: make room by discarding the oldest item if needed."""
    while True:
        try:
            q.put_nowait(_END)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


def _put_end_when_room(q: queue.Queue, abort: threading.Event) -> None:
    """The end marker after every item already queued (or at once, discarding, after ``abort``)."""
    if not _put(q, _END, drop=False, abort=abort):
        _put_end(q)


class Pipeline:
    """Wire a source, a segmenter, an ASR, a backend, the dialogue memory and a writer.

    ``min_confidence``: below it an event's emotion is ``"uncertain"``.
    ``drop_when_full``: None = decide from the source (live sources drop, files wait).
    ``summary_line``: append ``{"summary": ...}`` to the JSONL file at the end.
    ``on_event``: called with each event, in the worker thread, once the writer has it.
    """

    def __init__(
        self,
        source: Any,
        segmenter: Any,
        asr: Any,
        backend: Backend,
        memory: DialogueMemory,
        writer: EventWriter,
        tokenizer: Tokenizer,
        min_confidence: float | None = None,
        *,
        audio_queue_blocks: int = 256,
        utterance_queue: int = 4,
        drop_when_full: bool | None = None,
        summary_line: bool = True,
        speculate: bool = True,
        on_event: Callable[[Event], Any] | None = None,
    ) -> None:
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise HBAFError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
        if audio_queue_blocks <= 0 or utterance_queue <= 0:
            raise HBAFError("queue sizes must be positive")
        if memory.dim != backend.memory_dim or memory.context_size != backend.context_size:
            raise HBAFError(
                f"dialogue memory K={memory.context_size}, D={memory.dim} does not match the model "
                f"(K={backend.context_size}, D={backend.memory_dim}); build the memory from the backend's sizes"
            )
        self.source, self.segmenter, self.asr, self.backend = source, segmenter, asr, backend
        self.memory, self.writer, self.tokenizer = memory, writer, tokenizer
        self.summary_line = summary_line
        self.on_event = on_event
        self.live = is_live(source) if drop_when_full is None else bool(drop_when_full)
        self.audio_q: queue.Queue = queue.Queue(maxsize=audio_queue_blocks)
        self.utt_q: queue.Queue = queue.Queue(maxsize=utterance_queue)
        self._stop = threading.Event()
        self._stop_time = 0.0
        self._abort = threading.Event()
        self._source_done = threading.Event()
        self._errors: list[BaseException] = []
        self.stopped_by: str | None = None
        self.asr_first_seconds: float | None = None
        self.summary: Summary | None = None
        self.counters = RunCounters()
        self.worker = UtteranceWorker(asr, backend, memory, tokenizer, self.counters, min_confidence)
        self.events: list[Event] = []
        self._threads: list[threading.Thread] = []
        self._offered: tuple[int, int] | None = None
        self._arrivals = _Arrivals()
        # a file read faster than real time has no hangover to hide work in: speculate only when live
        self.speculator = Speculator(self.worker.recognise, text_of=lambda heard: heard[0]) if speculate and self.live else None
        if getattr(segmenter, "sentence_end", 0):  # --sentence-end-ms: the speculative transcript ends utterances early
            if self.speculator is not None:
                segmenter.heard_sentence = self.speculator.heard_sentence
            else:
                log.warning("--sentence-end-ms acts only on live input (a microphone, a paced file) with speculation on; "
                            "here every utterance ends after --min-silence-ms")

    @property
    def segmented(self) -> int:
        """Utterances the VAD cut so far, processed or dropped."""
        return self.counters.segmented

    # -- control

    def stop(self, reason: str = "stop") -> None:
        """Stop the source and finish; a second call also abandons queued utterances."""
        if self._stop.is_set():
            self._abort.set()
            return
        self.stopped_by = reason
        self._stop_time = time.perf_counter()
        self._stop.set()
        self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # a device already gone cannot be closed twice; stopping must not fail
            log.debug("closing the source failed", exc_info=True)

    def reset_memory(self) -> None:
        """Start a new dialogue at the next utterance (safe from a signal handler or any thread)."""
        self.worker.reset_memory()

    def prepare(self) -> None:
        """Warm up the backend and the ASR (first-call costs are reported apart)."""
        if self.backend.first_inference_seconds is None:
            self.backend.warmup()
        if self.asr_first_seconds is None and hasattr(self.asr, "warmup"):
            self.asr_first_seconds = float(self.asr.warmup())

    def run(self) -> Summary:
        """Process the whole source (or until ``stop()``); return and record the summary.

        An error in any stage stops the run; the summary is still written, then the
        error is raised.
        """
        self.prepare()
        t0 = time.perf_counter()
        self._threads = threads = [
            threading.Thread(target=self._guard, args=(loop,), name=f"hbaf-{name}", daemon=True)
            for name, loop in (("source", self._source_loop), ("segmenter", self._segment_loop), ("worker", self._worker_loop))
        ]
        for t in threads:
            t.start()
        worker = threads[2]
        while worker.is_alive():
            try:
                worker.join(0.1)
            except KeyboardInterrupt:  # no signal handler installed: treat Ctrl-C like stop()
                self.stop("SIGINT")
        if self.speculator is not None:
            self.speculator.close()
        self.summary = self._summarize(time.perf_counter() - t0)
        self.writer.write_summary(self.summary.to_dict(), to_jsonl=self.summary_line)
        self.summary.jsonl_lines_lost = self.writer.stats.jsonl_lines_lost
        if self._errors:
            raise self._errors[0]
        return self.summary

    @property
    def source_stuck(self) -> bool:
        """True when the source thread is still blocked in a read after ``run()`` (stdin that
        never closed); the process must then leave with ``os._exit``, as the interpreter
        cannot shut down around a thread blocked in a read."""
        return bool(self._threads) and self._threads[0].is_alive()

    def _guard(self, loop: Any) -> None:
        try:
            loop()
        except BaseException as err:  # surfaced by run(); the other stages wind down
            self._errors.append(err)
            log.debug("pipeline stage failed", exc_info=True)
            if self.stopped_by is None:
                self.stopped_by = "error"
            self._stop_time = time.perf_counter()
            self._stop.set()
            # a source that fails (e.g. a microphone unplugged) ends like stop(): the audio it had
            # captured is still segmented and processed; any other failure abandons the queues
            graceful = loop == self._source_loop and isinstance(err, HBAFError)
            if not graceful:
                self._abort.set()
            self._close_source()
            if not graceful:
                for q in (self.audio_q, self.utt_q):
                    _put_end(q)

    # -- stages

    def _source_loop(self) -> None:
        c = self.counters
        try:
            for block in self.source.blocks():
                if not _put(self.audio_q, (block, time.perf_counter()), drop=self.live, abort=self._abort):
                    if self._abort.is_set():
                        break
                    c.audio_drops += 1
                c.max_audio_q = max(c.max_audio_q, self.audio_q.qsize())
        finally:
            self._source_done.set()
            if not self._abort.is_set():
                _put_end_when_room(self.audio_q, self._abort)

    def _segment_loop(self) -> None:
        c = self.counters
        vad_mark = self.segmenter.vad_seconds
        while True:
            try:
                block = self.audio_q.get(timeout=0.1)
            except queue.Empty:
                # a source blocked in a read (stdin) cannot end its loop: stop without it
                stopped_for = time.perf_counter() - self._stop_time if self._stop.is_set() else 0.0
                if stopped_for > STOP_GRACE_S and not self._source_done.is_set():
                    block = _END
                else:
                    continue
            if self._abort.is_set():
                break
            if block is _END:
                utterances = self.segmenter.flush()
            else:
                block, arrived = block
                n = int(np.asarray(block).size)
                c.audio_samples += n
                self._arrivals.add(n, arrived)
                utterances = self.segmenter.accept(block)
                if self.speculator is not None and not utterances:
                    self._offer_speculation()
            for utt in utterances:
                c.segmented += 1
                if self.speculator is not None:
                    self.speculator.claim(utt.key)
                vad_now = self.segmenter.vad_seconds
                speech_end = utt.speech_end if utt.speech_end is not None else utt.end
                item = QueuedUtterance(utt, vad_now - vad_mark, time.perf_counter(),
                             self._arrivals.time_of(max(0, round(speech_end * SAMPLE_RATE) - 1)))
                vad_mark = vad_now
                if not _put(self.utt_q, item, drop=self.live, abort=self._abort):
                    c.utterance_drops += 1
                    if self.speculator is not None:
                        self.speculator.release(utt.key)
                    log.debug("utterance at %.2f s dropped: the worker is behind", utt.start)
                c.max_utt_q = max(c.max_utt_q, self.utt_q.qsize())
            if block is _END:
                break
        _put_end_when_room(self.utt_q, self._abort)

    def _offer_speculation(self) -> None:
        """During the hangover: hand the samples the utterance will hold to the speculator."""
        assert self.speculator is not None
        key = self.segmenter.pending_key()
        if key is not None and key != self._offered:
            self._offered = key
            pending = self.segmenter.pending()
            if pending is not None:
                self.speculator.offer(pending.key, pending.samples)

    def _worker_loop(self) -> None:
        while True:
            item = self.utt_q.get()
            if item is _END:
                return
            if self._abort.is_set():
                self.counters.utterance_drops += 1
                continue
            event = self.worker.process(item, self.speculator)
            self.events.append(event)
            self.writer.write(event)
            if self.on_event is not None:
                self.on_event(event)

    def _summarize(self, wall: float) -> Summary:
        speculation = self.speculator.stats.to_dict() if self.speculator is not None else None
        if speculation is not None:
            speculation["sentence_ends"] = int(getattr(self.segmenter, "sentence_cuts", 0))  # ended by --sentence-end-ms
        return self.counters.summary(
            utterances=len(self.events), wall=wall, vad_seconds=self.segmenter.vad_seconds, speculation=speculation,
            dropped_blocks=int(getattr(self.source, "dropped_blocks", 0)),
            jsonl_lines_lost=self.writer.stats.jsonl_lines_lost, jsonl_cut_line_found=self.writer.stats.cut_line_found,
            memory_resets=self.memory.resets,
            cold_start={"model_load_s": self.backend.load_seconds, "first_inference_s": self.backend.first_inference_seconds,
                        "asr_load_s": getattr(self.asr, "load_seconds", None), "asr_first_s": self.asr_first_seconds},
            backend=f"{self.backend.name} {self.backend.precision}", source=str(getattr(self.source, "name", "")),
            stopped_by=self.stopped_by, live=self.live,
        )
