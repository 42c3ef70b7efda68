"""The live pipeline: source -> VAD segmenter -> ASR + features + fusion -> events.

Three threads joined by two bounded queues::

    source thread    source.blocks() -> audio queue            (blocks of 16 kHz mono)
    segmenter thread audio queue -> Segmenter -> utterance queue
    worker thread    utterance queue -> ASR, log-mel, tokens, memory -> backend -> Event

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
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.events import Event, EventWriter
from edge_runtime.memory import DialogueMemory
from hbaf.errors import HBAFError
from hbaf.features import MAX_FRAMES, SAMPLE_RATE, log_mel
from hbaf.text import Tokenizer

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker on both queues
STOP_GRACE_S = 0.5  # after stop(), how long the segmenter waits for a source that is stuck in a read


@dataclass
class Summary:
    """End-of-run report.

    ``real_time_factor`` = compute time (VAD + ASR + features + fusion) / audio seconds;
    below 1 the pipeline keeps up with live audio. ``latency_ms`` is end of speech
    detected -> event (p50, p90, mean, max over the run's events, all after warm-up);
    ``stage_ms`` the mean of each stage. ``cold_start`` keeps model load and first
    inference apart from warm latency. ``stopped_by`` is SIGINT/SIGTERM/error when
    the run did not end with its source.
    """

    utterances: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    real_time_factor: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    dropped_blocks: int = 0
    dropped_utterances: int = 0
    jsonl_lines_lost: int = 0
    max_queue: dict[str, int] = field(default_factory=dict)
    memory_resets: int = 0
    cold_start: dict[str, float | None] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    backend: str = ""
    source: str = ""
    stopped_by: str | None = None
    live: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("audio_seconds", "wall_seconds", "compute_seconds"):
            d[key] = round(d[key], 3)
        d["real_time_factor"] = round(d["real_time_factor"], 4)
        d["latency_ms"] = {k: round(v, 1) for k, v in self.latency_ms.items()}
        d["stage_ms"] = {k: round(v, 1) for k, v in self.stage_ms.items()}
        d["cold_start"] = {k: (round(v, 3) if v is not None else None) for k, v in self.cold_start.items()}
        d["peak_rss_mb"] = round(self.peak_rss_mb, 1)
        return d

    def format(self) -> str:
        """The block printed at exit."""
        lat = self.latency_ms
        cs = self.cold_start
        lines = [
            f"summary: {self.utterances} utterance(s) in {self.audio_seconds:.1f} s of audio, "
            f"wall {self.wall_seconds:.1f} s, real-time factor {self.real_time_factor:.3f}"
            + (f"  [stopped by {self.stopped_by}]" if self.stopped_by else ""),
        ]
        if lat:
            stages = ", ".join(f"{k} {v:.0f}" for k, v in self.stage_ms.items())
            lines.append(
                f"  latency end-of-speech -> event: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, "
                f"mean {lat['mean']:.0f} ms (stages, mean ms: {stages})"
            )
            if not self.live:
                lines.append("  (input read faster than real time, so latency includes waiting in the queue; pace files with --realtime to measure live latency)")
        lines.append(
            "  cold start: model load {} s, first inference {} s, ASR load {} s, ASR first decode {} s; peak RSS {:.0f} MB".format(
                *(f"{cs[k]:.3f}" if cs.get(k) is not None else "-" for k in ("model_load_s", "first_inference_s", "asr_load_s", "asr_first_s")),
                self.peak_rss_mb,
            )
        )
        lines.append(
            f"  dropped: {self.dropped_blocks} audio block(s), {self.dropped_utterances} utterance(s); "
            f"JSONL lines lost: {self.jsonl_lines_lost}; memory resets: {self.memory_resets}; backend {self.backend}"
        )
        return "\n".join(lines)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def is_live(source: Any) -> bool:
    """A microphone or a file paced in real time: it must never wait for the consumer."""
    from edge_runtime.sources import MicSource

    return isinstance(source, MicSource) or bool(getattr(source, "realtime", False))


def fuse_utterance(
    backend: Backend,
    tokenizer: Tokenizer,
    memory: DialogueMemory,
    feats: np.ndarray,
    text: str,
    start: float,
    end: float,
) -> tuple[dict[str, Any], int]:
    """One fusion call exactly as the runtime makes it: tokens of ``text``, the dialogue memory
    (emptied first when the pause since the last utterance is too long), the backend, and the
    new utterance embedding pushed when the outputs are finite.

    Returns (the backend's outputs plus ``finite``, how many past utterances the memory held).
    Offline analyses call this too, so they measure the runtime's own path.
    """
    ids, mask = tokenizer([text])
    memory.before(start)
    mem, mem_mask = memory.arrays()
    context = len(memory)
    out = dict(backend.run(backend.feeds(feats, ids, mask, mem, mem_mask)))
    out["finite"] = bool(np.all(np.isfinite(out["probs"])) and np.all(np.isfinite(out["utt_emb"])))
    if out["finite"]:
        memory.push(out["utt_emb"][0], end=end)
    return out, context


@dataclass
class _Item:
    utterance: Any
    vad_seconds: float
    queued_at: float


class Pipeline:
    """Wire a source, a segmenter, an ASR, a backend, the dialogue memory and a writer.

    ``min_confidence``: below it an event's emotion is ``"uncertain"``.
    ``drop_when_full``: None = decide from the source (live sources drop, files wait).
    ``summary_line``: append ``{"summary": ...}`` to the JSONL file at the end.
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
        self.source = source
        self.segmenter = segmenter
        self.asr = asr
        self.backend = backend
        self.memory = memory
        self.writer = writer
        self.tokenizer = tokenizer
        self.min_confidence = min_confidence
        self.summary_line = summary_line
        self.live = is_live(source) if drop_when_full is None else bool(drop_when_full)
        self.audio_q: queue.Queue = queue.Queue(maxsize=audio_queue_blocks)
        self.utt_q: queue.Queue = queue.Queue(maxsize=utterance_queue)
        self._stop = threading.Event()
        self._stop_time = 0.0
        self._abort = threading.Event()
        self._reset_requested = threading.Event()
        self._source_done = threading.Event()
        self._errors: list[BaseException] = []
        self.stopped_by: str | None = None
        self.asr_first_seconds: float | None = None
        self.summary: Summary | None = None
        # counters
        self.audio_drops = 0
        self.utterance_drops = 0
        self.audio_samples = 0
        self.segmented = 0
        self.max_audio_q = 0
        self.max_utt_q = 0
        self.events: list[Event] = []
        self._threads: list[threading.Thread] = []
        self._stage_seconds: dict[str, list[float]] = {k: [] for k in ("vad", "queue", "asr", "features", "fusion")}
        self._latencies: list[float] = []
        self._nan_warned = False

    # -- control

    def stop(self, reason: str = "stop") -> None:
        """Stop the source and finish; a second call also abandons queued utterances."""
        if self._stop.is_set():
            self._abort.set()
            return
        self.stopped_by = reason
        self._stop_time = time.perf_counter()
        self._stop.set()
        try:
            self.source.close()
        except Exception:  # a device already gone cannot be closed twice; stopping must not fail
            log.debug("closing the source failed", exc_info=True)

    def reset_memory(self) -> None:
        """Start a new dialogue at the next utterance (safe from a signal handler or any thread)."""
        self._reset_requested.set()

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
            threading.Thread(target=self._guard, args=(self._source_loop,), name="hbaf-source", daemon=True),
            threading.Thread(target=self._guard, args=(self._segment_loop,), name="hbaf-segmenter", daemon=True),
            threading.Thread(target=self._guard, args=(self._worker_loop,), name="hbaf-worker", daemon=True),
        ]
        for t in threads:
            t.start()
        worker = threads[2]
        while worker.is_alive():
            try:
                worker.join(0.1)
            except KeyboardInterrupt:  # no signal handler installed: treat Ctrl-C like stop()
                self.stop("SIGINT")
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
            try:
                self.source.close()
            except Exception:
                log.debug("closing the source failed", exc_info=True)
            if not graceful:
                for q in (self.audio_q, self.utt_q):
                    self._put_end(q)

    # -- stages

    def _put(self, q: queue.Queue, item: Any) -> bool:
        """Put ``item``: drop it when live and full (returns False), else wait for room."""
        if self.live:
            try:
                q.put_nowait(item)
                return True
            except queue.Full:
                return False
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    @staticmethod
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

    def _source_loop(self) -> None:
        try:
            for block in self.source.blocks():
                if not self._put(self.audio_q, block):
                    if self._abort.is_set():
                        break
                    self.audio_drops += 1
                self.max_audio_q = max(self.max_audio_q, self.audio_q.qsize())
        finally:
            self._source_done.set()
            if not self._abort.is_set():
                self._put_end_when_room(self.audio_q)

    def _put_end_when_room(self, q: queue.Queue) -> None:
        while not self._abort.is_set():
            try:
                q.put(_END, timeout=0.1)
                return
            except queue.Full:
                continue
        self._put_end(q)

    def _segment_loop(self) -> None:
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
                self.audio_samples += int(np.asarray(block).size)
                utterances = self.segmenter.accept(block)
            for utt in utterances:
                self.segmented += 1
                vad_now = self.segmenter.vad_seconds
                item = _Item(utt, vad_now - vad_mark, time.perf_counter())
                vad_mark = vad_now
                if not self._put(self.utt_q, item):
                    self.utterance_drops += 1
                    log.debug("utterance at %.2f s dropped: the worker is behind", utt.start)
                self.max_utt_q = max(self.max_utt_q, self.utt_q.qsize())
            if block is _END:
                break
        self._put_end_when_room(self.utt_q)

    def _worker_loop(self) -> None:
        while True:
            item = self.utt_q.get()
            if item is _END:
                return
            if self._abort.is_set():
                self.utterance_drops += 1
                continue
            self._process(item)

    # -- one utterance

    def _process(self, item: _Item) -> Event:
        utt = item.utterance
        t_start = time.perf_counter()
        text = self.asr.transcribe(utt.samples).text
        t_asr = time.perf_counter()
        feats = log_mel(utt.samples)[:MAX_FRAMES]
        t_feat = time.perf_counter()
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self.memory.reset()
        out, context = fuse_utterance(self.backend, self.tokenizer, self.memory, feats, text, utt.start, utt.end)
        t_fuse = time.perf_counter()

        probs = out["probs"][0]
        labels = self.backend.labels
        if out["finite"]:
            top = int(np.argmax(probs))
            confidence = float(probs[top])
            emotion = labels[top]
        else:
            if not self._nan_warned:
                self._nan_warned = True
                log.warning("%s produced non-finite outputs (FP16/INT8 overflow?); try the FP32 model", self.backend.path.name)
            probs = np.zeros(len(labels), dtype=np.float32)
            confidence, emotion = 0.0, "invalid"
        uncertain = emotion == "invalid" or (self.min_confidence is not None and confidence < self.min_confidence)
        if uncertain and emotion != "invalid":
            emotion = "uncertain"
        gate = out["gate"][0]
        stages = {
            "vad": item.vad_seconds,
            "queue": t_start - item.queued_at,
            "asr": t_asr - t_start,
            "features": t_feat - t_asr,
            "fusion": t_fuse - t_feat,
        }
        total = time.perf_counter() - utt.ended_at
        event = Event(
            utterance=len(self.events) + 1,
            start=float(utt.start),
            end=float(utt.end),
            text=text,
            emotion=emotion,
            confidence=confidence,
            probs={label: float(p) for label, p in zip(labels, probs)},
            gate={"text_to_audio": float(gate[0]), "audio_to_text": float(gate[1])},
            latency_ms={**{k: v * 1000.0 for k, v in stages.items()}, "total": total * 1000.0},
            uncertain=uncertain,
            context=context,
        )
        for k, v in stages.items():
            self._stage_seconds[k].append(v)
        self._latencies.append(total)
        self.events.append(event)
        self.writer.write(event)
        return event

    # -- summary

    def _summarize(self, wall: float) -> Summary:
        audio_s = self.audio_samples / SAMPLE_RATE
        work = ("asr", "features", "fusion")
        compute = float(self.segmenter.vad_seconds) + sum(sum(self._stage_seconds[k]) for k in work)
        lat_ms = np.asarray(self._latencies, dtype=np.float64) * 1000.0
        latency = {}
        if lat_ms.size:
            latency = {
                "p50": float(np.percentile(lat_ms, 50)),
                "p90": float(np.percentile(lat_ms, 90)),
                "mean": float(lat_ms.mean()),
                "max": float(lat_ms.max()),
            }
        stage_ms = {k: 1000.0 * float(np.mean(v)) for k, v in self._stage_seconds.items() if v}
        return Summary(
            utterances=len(self.events),
            audio_seconds=audio_s,
            wall_seconds=wall,
            compute_seconds=compute,
            real_time_factor=compute / audio_s if audio_s > 0 else 0.0,
            latency_ms=latency,
            stage_ms=stage_ms,
            dropped_blocks=int(getattr(self.source, "dropped_blocks", 0)) + self.audio_drops,
            dropped_utterances=self.utterance_drops,
            jsonl_lines_lost=self.writer.stats.jsonl_lines_lost,
            max_queue={"audio": self.max_audio_q, "utterances": self.max_utt_q},
            memory_resets=self.memory.resets,
            cold_start={
                "model_load_s": self.backend.load_seconds,
                "first_inference_s": self.backend.first_inference_seconds,
                "asr_load_s": getattr(self.asr, "load_seconds", None),
                "asr_first_s": self.asr_first_seconds,
            },
            peak_rss_mb=peak_rss_mb(),
            backend=f"{self.backend.name} {self.backend.precision}",
            source=str(getattr(self.source, "name", "")),
            stopped_by=self.stopped_by,
            live=self.live,
        )
