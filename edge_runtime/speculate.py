"""Speculative recognition during the VAD's hangover.

The segmenter declares an utterance over only after ``--min-silence-ms`` of silence, but the
samples the utterance will hold are known once the trailing pad after the last voiced window
has arrived (``Segmenter.pending``). At that moment the segmenter thread offers them here and
one background thread transcribes them (and computes their features). When the VAD confirms
the end, the worker takes the finished (or nearly finished) result instead of starting the
recogniser then; when speech resumes first, the next offer has another key and the stale
result is dropped.

Bounded work: at most one speculation in flight (an offer while one runs is skipped and
counted), ``offer`` never blocks (the audio path only hands over a copy of the samples), and
every speculation ends as exactly one of used / discarded, with its compute time counted.
Because the speculation transcribes exactly the samples the final utterance holds, the
transcript is the one the non-speculative path would produce.

The finished transcript can also end the utterance early (``--sentence-end-ms``): when it ends a
sentence (``ends_sentence``), ``heard_sentence(key)`` says so to the segmenter, which then closes
the utterance after that shorter silence instead of the full ``--min-silence-ms``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout  # not the built-in one before Python 3.11
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (first, last) stream sample of the utterance
_CLOSERS = "\"')]}\u00bb\u201d\u2019"  # closing quotes and brackets after a sentence's mark


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends a sentence: its last mark, after any closing quotes or brackets,
    is ``.``, ``?`` or ``!``. An ellipsis (``...``) is a thought trailing off, not an end."""
    t = text.rstrip().rstrip(_CLOSERS).rstrip()
    return bool(t) and t[-1] in ".?!" and not t.endswith("..")


@dataclass
class Speculation:
    key: Key
    future: Future
    offered_at: float


@dataclass
class SpeculationStats:
    offered: int = 0  # speculations started
    used: int = 0  # their result became an event
    discarded: int = 0  # speech resumed (or the utterance was cut otherwise): result dropped
    skipped_busy: int = 0  # offers not started because one was still running
    compute_s: float = 0.0  # work done by all speculations
    wasted_s: float = 0.0  # the part of it that was discarded
    saved_ms: list[float] = field(default_factory=list)  # per used speculation: work already done when the VAD confirmed

    def to_dict(self) -> dict[str, Any]:
        saved = np.asarray(self.saved_ms, dtype=np.float64)
        return {
            "offered": self.offered, "used": self.used, "discarded": self.discarded, "skipped_busy": self.skipped_busy,
            "compute_s": round(self.compute_s, 3), "wasted_s": round(self.wasted_s, 3),
            "saved_ms_mean": round(float(saved.mean()), 1) if saved.size else None,
        }


class Speculator:
    """Runs ``work(samples) -> result`` ahead of the VAD's decision, one job at a time.

    ``text_of(result)`` is the transcript in a result (default: the result is the text); only
    ``heard_sentence`` reads it."""

    def __init__(self, work: Callable[[np.ndarray], Any], *, text_of: Callable[[Any], str] | None = None) -> None:
        self._work = work
        self._text_of = text_of if text_of is not None else str
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hbaf-speculate")
        self._lock = threading.RLock()  # a done-callback may run inside a locked section
        self._current: Speculation | None = None
        self._claimed: dict[Key, Speculation] = {}  # utterances already emitted, waiting for the worker
        self.stats = SpeculationStats()

    def _timed(self, samples: np.ndarray) -> tuple[Any, float, float]:
        t0 = time.perf_counter()
        result = self._work(samples)
        t1 = time.perf_counter()
        return result, t1 - t0, t1

    def offer(self, key: Key, samples: np.ndarray) -> bool:
        """Start speculating on ``samples`` (never blocks). Returns True when a job started."""
        with self._lock:
            cur = self._current
            if cur is not None and cur.key == key or key in self._claimed:
                return False
            if any(not s.future.done() for s in (cur, *self._claimed.values()) if s is not None):
                self.stats.skipped_busy += 1
                return False
            if cur is not None:
                self._discard(cur)
            self._current = Speculation(key, self._pool.submit(self._timed, samples), time.perf_counter())
            self.stats.offered += 1
            return True

    def heard_sentence(self, key: Key) -> bool:
        """True when the speculation on ``key`` has finished and its transcript ends a sentence
        (never waits: False while it runs, or when none runs on ``key``). The segmenter asks it
        once per silent VAD window from ``--sentence-end-ms`` on."""
        with self._lock:
            cur = self._current
        if cur is None or cur.key != key or not cur.future.done() or cur.future.exception() is not None:
            return False
        result, _, _ = cur.future.result()
        return ends_sentence(self._text_of(result))

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until the running speculation has finished (a recogniser that always keeps up:
        the offline endpoint analysis and tests). True when none is left running."""
        with self._lock:
            cur = self._current
        if cur is None:
            return True
        try:
            cur.future.exception(timeout)
        except FutureTimeout:
            return False
        return True

    def claim(self, key: Key) -> None:
        """The segmenter emitted utterance ``key``: keep its speculation for the worker, whatever
        is offered next (called from the segmenter thread)."""
        with self._lock:
            if self._current is not None and self._current.key == key:
                self._claimed[key], self._current = self._current, None

    def release(self, key: Key) -> None:
        """The utterance ``key`` was dropped before the worker saw it: discard its speculation."""
        with self._lock:
            spec = self._claimed.pop(key, None)
            if spec is not None:
                self._discard(spec)

    def take(self, key: Key) -> Any | None:
        """The result for the utterance ``key`` (waiting for it if still running), or None when
        no speculation was claimed for it."""
        with self._lock:
            cur = self._claimed.pop(key, None)
        if cur is None:
            return None
        waited_from = time.perf_counter()
        result, seconds, finished = cur.future.result()
        self.stats.used += 1
        self.stats.compute_s += seconds
        self.stats.saved_ms.append(1000.0 * max(0.0, min(seconds, waited_from - (finished - seconds))))
        return result

    def _discard(self, spec: Speculation) -> None:
        """Count a speculation that will not be used (its time once it has finished)."""
        self.stats.discarded += 1

        def account(f: Future) -> None:
            if f.exception() is None:
                _, seconds, _ = f.result()
                with self._lock:
                    self.stats.compute_s += seconds
                    self.stats.wasted_s += seconds

        spec.future.add_done_callback(account)

    def close(self) -> None:
        """Drop what is pending and wait for the running job (its time is counted)."""
        with self._lock:
            pending = [s for s in (self._current, *self._claimed.values()) if s is not None]
            self._current = None
            self._claimed.clear()
            for spec in pending:
                self._discard(spec)
        self._pool.shutdown(wait=True)
