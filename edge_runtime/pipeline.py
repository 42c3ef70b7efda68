"""The live pipeline: source -> VAD segmenter -> ASR + features + fusion -> events.

Three threads joined by two bounded queues, and for live input a fourth that speculates::

    source thread     source.blocks() -> audio queue           (blocks of 16 kHz mono, arrival time)
    segmenter thread  audio queue -> Segmenter -> utterance queue
                      during the hangover: the utterance's samples -> speculation thread
    speculation       ASR + features of those samples, ahead of the VAD's decision (speculate.py)
    worker thread     utterance queue -> ASR + features (or the speculation's result), tokens,
                      memory -> backend -> Event

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import vad
from edge_runtime.asr import DEFAULT_BEAM_SIZE
from edge_runtime.backends import Backend
from edge_runtime.events import Event, EventWriter
from edge_runtime.memory import DEFAULT_RESET_AFTER, DialogueMemory
from edge_runtime.offline import fuse_utterance
from edge_runtime.speculate import Speculator
from edge_runtime.summary import Summary, peak_rss_mb, percentiles
from hbaf.errors import HBAFError
from hbaf.contract import LOG_MEL
from hbaf.encoder import ENCODER_MODELS
from hbaf.features import SAMPLE_RATE, utterance_features
from hbaf.text import Tokenizer

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker on both queues
# per-event latency stages; endpoint + queue + asr + features + fusion = speech_end (what a person
# waits after their last word), total = the same from the VAD's decision; vad_compute is the VAD's
# compute spent on the utterance's audio while it was spoken (not a wait)
STAGES = ("endpoint", "queue", "asr", "features", "fusion", "vad_compute")
STOP_GRACE_S = 0.5  # after stop(), how long the segmenter waits for a source that is stuck in a read


def is_live(source: Any) -> bool:
    """A microphone or a file paced in real time: it must never wait for the consumer."""
    from edge_runtime.mic import MicSource

    return isinstance(source, MicSource) or bool(getattr(source, "realtime", False))


@dataclass
class _Item:
    utterance: Any
    vad_seconds: float
    queued_at: float
    speech_end_at: float  # perf_counter when the utterance's last voiced sample reached the pipeline


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
        speculate: bool = True,
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
        self.feature_kind = backend.spec.feature_kind
        states_of = getattr(asr, "states_of", None)
        self._shared_encoder = bool(states_of and states_of(self.feature_kind))
        if not self._shared_encoder and self.feature_kind != LOG_MEL:
            log.warning("the recogniser cannot give the model's %s input; its encoder runs a second time per utterance "
                        "(use the bundled tiny.en recogniser to share one pass)", self.feature_kind)
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
        self._stage_seconds: dict[str, list[float]] = {k: [] for k in STAGES}
        self._offered: tuple[int, int] | None = None
        self._compute = {"asr": 0.0, "features": 0.0, "fusion": 0.0}  # seconds, speculative work of used results included
        self._latencies: list[float] = []
        self._speech_end_latencies: list[float] = []
        self._arrivals = _Arrivals()
        # a file read faster than real time has no hangover to hide work in: speculate only when live
        self.speculator = Speculator(self._recognise, text_of=lambda heard: heard[0]) if speculate and self.live else None
        if getattr(segmenter, "sentence_end", 0):  # --sentence-end-ms: the speculative transcript ends utterances early
            if self.speculator is not None:
                segmenter.heard_sentence = self.speculator.heard_sentence
            else:
                log.warning("--sentence-end-ms acts only on live input (a microphone, a paced file) with speculation on; "
                            "here every utterance ends after --min-silence-ms")
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
                if not self._put(self.audio_q, (block, time.perf_counter())):
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
                block, arrived = block
                n = int(np.asarray(block).size)
                self.audio_samples += n
                self._arrivals.add(n, arrived)
                utterances = self.segmenter.accept(block)
                if self.speculator is not None and not utterances:
                    self._offer_speculation()
            for utt in utterances:
                self.segmented += 1
                if self.speculator is not None:
                    self.speculator.claim(utt.key)
                vad_now = self.segmenter.vad_seconds
                speech_end = utt.speech_end if utt.speech_end is not None else utt.end
                item = _Item(utt, vad_now - vad_mark, time.perf_counter(),
                             self._arrivals.time_of(max(0, round(speech_end * SAMPLE_RATE) - 1)))
                vad_mark = vad_now
                if not self._put(self.utt_q, item):
                    self.utterance_drops += 1
                    if self.speculator is not None:
                        self.speculator.release(utt.key)
                    log.debug("utterance at %.2f s dropped: the worker is behind", utt.start)
                self.max_utt_q = max(self.max_utt_q, self.utt_q.qsize())
            if block is _END:
                break
        self._put_end_when_room(self.utt_q)

    def _offer_speculation(self) -> None:
        """During the hangover: hand the samples the utterance will hold to the speculator."""
        assert self.speculator is not None
        key = self.segmenter.pending_key()
        if key is not None and key != self._offered:
            self._offered = key
            pending = self.segmenter.pending()
            if pending is not None:
                self.speculator.offer(pending.key, pending.samples)

    def _recognise(self, samples: np.ndarray) -> tuple[str, np.ndarray, float, float]:
        """ASR and features of one utterance: (text, features, asr seconds, feature seconds).

        When the fusion model takes the recogniser's own encoder states, one encoder pass gives
        both (the feature time is then the copy of the states, inside the ASR time)."""
        t0 = time.perf_counter()
        if self._shared_encoder:
            heard = self.asr.transcribe(samples, states=self.feature_kind)
            return heard.text, heard.states, time.perf_counter() - t0, 0.0
        text = self.asr.transcribe(samples).text
        t1 = time.perf_counter()
        feats = utterance_features(samples, self.feature_kind)
        return text, feats, t1 - t0, time.perf_counter() - t1

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
        ready = self.speculator.take(utt.key) if self.speculator is not None else None
        text, feats, asr_s, feat_s = ready if ready is not None else self._recognise(utt.samples)
        t_feat = time.perf_counter()
        self._compute["asr"] += asr_s
        self._compute["features"] += feat_s
        # with a speculation the wait for it counts as ASR; features were computed with it
        wait = t_feat - t_start
        t_asr = t_start + (wait if ready is not None else asr_s)
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self.memory.reset()
        out, context = fuse_utterance(self.backend, self.tokenizer, self.memory, feats, text, utt.start, utt.end)
        t_fuse = time.perf_counter()
        self._compute["fusion"] += t_fuse - t_feat

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
            "endpoint": utt.ended_at - item.speech_end_at,
            "queue": t_start - item.queued_at,
            "asr": t_asr - t_start,
            "features": t_feat - t_asr,
            "fusion": t_fuse - t_feat,
        }
        now = time.perf_counter()
        total = now - utt.ended_at
        speech_end_total = now - item.speech_end_at
        event = Event(
            utterance=len(self.events) + 1,
            start=float(utt.start),
            end=float(utt.end),
            text=text,
            emotion=emotion,
            confidence=confidence,
            probs={label: float(p) for label, p in zip(labels, probs)},
            gate={"text_to_audio": float(gate[0]), "audio_to_text": float(gate[1])},
            latency_ms={**{k: v * 1000.0 for k, v in stages.items()}, "vad_compute": item.vad_seconds * 1000.0,
                        "total": total * 1000.0, "speech_end": speech_end_total * 1000.0},
            uncertain=uncertain,
            context=context,
        )
        for k, v in stages.items():
            self._stage_seconds[k].append(v)
        self._stage_seconds["vad_compute"].append(item.vad_seconds)
        self._latencies.append(total)
        self._speech_end_latencies.append(speech_end_total)
        self.events.append(event)
        self.writer.write(event)
        return event

    # -- summary

    def _summarize(self, wall: float) -> Summary:
        audio_s = self.audio_samples / SAMPLE_RATE
        speculation = self.speculator.stats.to_dict() if self.speculator is not None else None
        if speculation is not None:
            speculation["sentence_ends"] = int(getattr(self.segmenter, "sentence_cuts", 0))  # ended by --sentence-end-ms
        compute_ms = {"vad": 1000.0 * float(self.segmenter.vad_seconds), **{k: 1000.0 * v for k, v in self._compute.items()}}
        if speculation is not None:
            compute_ms["speculation_discarded"] = 1000.0 * speculation["wasted_s"]
        compute = sum(compute_ms.values()) / 1000.0
        stage_ms = {k: 1000.0 * float(np.mean(v)) for k, v in self._stage_seconds.items() if v}
        return Summary(
            utterances=len(self.events),
            audio_seconds=audio_s,
            wall_seconds=wall,
            compute_seconds=compute,
            real_time_factor=compute / audio_s if audio_s > 0 else 0.0,
            latency_ms=percentiles(self._latencies),
            speech_end_latency_ms=percentiles(self._speech_end_latencies),
            stage_ms=stage_ms,
            speculation=speculation,
            compute_ms=compute_ms,
            dropped_blocks=int(getattr(self.source, "dropped_blocks", 0)) + self.audio_drops,
            dropped_utterances=self.utterance_drops,
            jsonl_lines_lost=self.writer.stats.jsonl_lines_lost,
            jsonl_cut_line_found=self.writer.stats.cut_line_found,
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


# ----------------------------------------------------------------------------- wiring


@dataclass
class RunOptions:
    """Every setting that shapes a pipeline; ``hbaf-edge run`` takes its flags' defaults from here."""

    model: str | Path | None = None  # None: the packaged model (edge_runtime.demo.default_model_path)
    model_device: str = "cpu"
    fp16: bool = False
    threads: int | None = None
    asr: str | None = None  # None: the bundled Whisper tiny.en
    asr_device: str = "auto"
    asr_beam: int = DEFAULT_BEAM_SIZE
    asr_encoder: str | None = None  # None: CTranslate2 (edge_runtime/recogniser.py lists the forms)
    asr_decoder: str | None = None
    context: int | None = None  # None: all K slots the model was trained with
    reset_after: float = DEFAULT_RESET_AFTER
    min_confidence: float | None = None
    vad_threshold: float = vad.THRESHOLD
    min_speech_ms: int = vad.MIN_SPEECH_MS
    min_silence_ms: int = vad.MIN_SILENCE_MS
    speech_pad_ms: int = vad.SPEECH_PAD_MS
    max_utterance_s: float = vad.MAX_SECONDS
    sentence_end_ms: int = vad.SENTENCE_END_MS  # shorter silence ending a speculative transcript's sentence; 0 = off
    speculate: bool = True  # recognise during the VAD's hangover (edge_runtime/speculate.py)
    summary_line: bool = True


def build_pipeline(source: Any, writer: EventWriter, options: RunOptions, *, backend: Backend | None = None,
                   drop_when_full: bool | None = None) -> Pipeline:
    """The live pipeline, wired the one way ``hbaf-edge run``, the benchmark's end-to-end run and
    the soak all use: segmenter, backend (opened from ``options.model`` unless given), dialogue
    memory, tokenizer and ASR. Cheap checks run before the models load."""
    from edge_runtime.asr import WhisperASR
    from edge_runtime.model_files import open_backend
    from edge_runtime.demo import default_model_path

    if options.asr_beam < 1:
        raise HBAFError(f"--asr-beam {options.asr_beam}: the beam size must be >= 1 (1 = greedy)")
    if options.context is not None and options.context < 0:
        raise HBAFError(f"--context must be >= 0, got {options.context}")
    if options.sentence_end_ms and not options.speculate:
        raise HBAFError(f"--sentence-end-ms {options.sentence_end_ms} reads the speculative transcript, which --no-speculate "
                        "turns off; drop --no-speculate, or use --sentence-end-ms 0")
    segmenter = vad.Segmenter(options.vad_threshold, options.min_speech_ms, options.min_silence_ms,
                              options.speech_pad_ms, options.max_utterance_s, sentence_end_ms=options.sentence_end_ms)
    if backend is None:
        model = Path(options.model).expanduser() if options.model else default_model_path()
        backend = open_backend(model, device=options.model_device, fp16=options.fp16, threads=options.threads)
    memory = DialogueMemory(backend.context_size, backend.memory_dim, window=options.context, reset_after=options.reset_after)
    tokenizer = backend.tokenizer()
    asr = WhisperASR(options.asr, device=options.asr_device, cpu_threads=options.threads, beam_size=options.asr_beam,
                     encoder=options.asr_encoder, decoder=options.asr_decoder)
    kind = backend.spec.feature_kind
    if options.asr_encoder not in (None, "ct2") and kind in ENCODER_MODELS and not asr.states_of(kind):
        raise HBAFError(f"--asr-encoder {options.asr_encoder} does not compute the {kind} states the fusion model reads; "
                        f"export the encoder of {ENCODER_MODELS[kind]} with `hbaf-export asr`, or leave --asr-encoder at ct2")
    return Pipeline(source, segmenter, asr, backend, memory, writer, tokenizer, options.min_confidence,
                    drop_when_full=drop_when_full, summary_line=options.summary_line, speculate=options.speculate)
