"""One utterance in, one event out: ASR and features (or the speculation's result), the dialogue
memory, the fusion model, and the event with its latency breakdown (edge_runtime/events.py
``STAGES``). The pipeline's worker thread runs it for every utterance the VAD cuts; the
speculation thread runs its ``recognise`` ahead of the VAD's decision."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.events import Event, assemble_event, latency_ms
from edge_runtime.memory import DialogueMemory
from edge_runtime.offline import fuse_utterance
from edge_runtime.summary import RunCounters
from hbaf.contract import LOG_MEL
from hbaf.features import utterance_features
from hbaf.text import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class QueuedUtterance:
    """An utterance the VAD cut, on its way to the worker."""

    utterance: Any
    vad_seconds: float  # the VAD's compute on its audio
    queued_at: float  # perf_counter when it was queued
    speech_end_at: float  # perf_counter when its last voiced sample reached the pipeline


class UtteranceWorker:
    """Turns queued utterances into events, numbered from 1, counting compute and latency in
    ``counters``. ``min_confidence``: below it an event's emotion is ``"uncertain"``."""

    def __init__(self, asr: Any, backend: Backend, memory: DialogueMemory, tokenizer: Tokenizer, counters: RunCounters,
                 min_confidence: float | None = None) -> None:
        self.asr, self.backend, self.memory, self.tokenizer = asr, backend, memory, tokenizer
        self.counters = counters
        self.min_confidence = min_confidence
        self.feature_kind = backend.spec.feature_kind
        states_of = getattr(asr, "states_of", None)
        self.shared_encoder = bool(states_of and states_of(self.feature_kind))
        if not self.shared_encoder and self.feature_kind != LOG_MEL:
            log.warning("the recogniser cannot give the model's %s input; its encoder runs a second time per utterance "
                        "(use the bundled tiny.en recogniser to share one pass)", self.feature_kind)
        self.made = 0  # events made so far
        self._reset_requested = threading.Event()
        self._nan_warned = False

    def reset_memory(self) -> None:
        """Start a new dialogue at the next utterance (safe from a signal handler or any thread)."""
        self._reset_requested.set()

    def recognise(self, samples: np.ndarray) -> tuple[str, np.ndarray, float, float]:
        """ASR and features of one utterance: (text, features, asr seconds, feature seconds).

        When the fusion model takes the recogniser's own encoder states, one encoder pass gives
        both (the feature time is then the copy of the states, inside the ASR time)."""
        t0 = time.perf_counter()
        if self.shared_encoder:
            heard = self.asr.transcribe(samples, states=self.feature_kind)
            return heard.text, heard.states, time.perf_counter() - t0, 0.0
        text = self.asr.transcribe(samples).text
        t1 = time.perf_counter()
        feats = utterance_features(samples, self.feature_kind)
        return text, feats, t1 - t0, time.perf_counter() - t1

    def process(self, item: QueuedUtterance, speculator: Any = None) -> Event:
        """The event of ``item``; ``speculator`` (or None) may already hold its recognition."""
        utt, compute = item.utterance, self.counters.compute
        t_start = time.perf_counter()
        ready = speculator.take(utt.key) if speculator is not None else None
        text, feats, asr_s, feat_s = ready if ready is not None else self.recognise(utt.samples)
        t_feat = time.perf_counter()
        compute["asr"] += asr_s
        compute["features"] += feat_s
        # with a speculation the wait for it counts as ASR; features were computed with it
        t_asr = t_start + (t_feat - t_start if ready is not None else asr_s)
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self.memory.reset()
        fused, context = fuse_utterance(self.backend, self.tokenizer, self.memory, feats, text, utt.start, utt.end)
        t_fuse = time.perf_counter()
        compute["fusion"] += t_fuse - t_feat
        stages = {"endpoint": utt.ended_at - item.speech_end_at, "queue": t_start - item.queued_at,
                  "asr": t_asr - t_start, "features": t_feat - t_asr, "fusion": t_fuse - t_feat}
        now = time.perf_counter()
        total, speech_end = now - utt.ended_at, now - item.speech_end_at
        self.made += 1
        event = assemble_event(self.made, utt, text, fused, self.backend.labels, min_confidence=self.min_confidence,
                               context=context, latency=latency_ms(stages, item.vad_seconds, total, speech_end))
        if event.emotion == "invalid" and not self._nan_warned:
            self._nan_warned = True
            log.warning("%s produced non-finite outputs (FP16/INT8 overflow?); try the FP32 model", self.backend.path.name)
        self.counters.add_event(stages, item.vad_seconds, total, speech_end)
        return event
