"""The end-of-run report of the live pipeline (printed at exit and written as the last JSONL line)."""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_runtime.events import STAGES
from hbaf.contract import SAMPLE_RATE


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
    speech_end_latency_ms: dict[str, float] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    speculation: dict[str, Any] | None = None
    compute_ms: dict[str, float] = field(default_factory=dict)
    dropped_blocks: int = 0
    dropped_utterances: int = 0
    jsonl_lines_lost: int = 0
    jsonl_cut_line_found: bool = False  # --output ended inside a line (an earlier run cut short); events started on a fresh line
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
        d["speech_end_latency_ms"] = {k: round(v, 1) for k, v in self.speech_end_latency_ms.items()}
        d["compute_ms"] = {k: round(v, 1) for k, v in self.compute_ms.items()}
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
            felt = self.speech_end_latency_ms
            lines.append(
                f"  latency last voiced sample -> event: p50 {felt['p50']:.0f} ms, p90 {felt['p90']:.0f} ms; "
                f"VAD end-of-speech decision -> event: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms "
                f"(stages, mean ms: {stages})"
            )
            if not self.live:
                lines.append("  (input read faster than real time, so latency includes waiting in the queue; pace files with --realtime to measure live latency)")
        lines.append(
            "  cold start: model load {} s, first inference {} s, ASR load {} s, ASR first decode {} s; peak RSS {:.0f} MB".format(
                *(f"{cs[k]:.3f}" if cs.get(k) is not None else "-" for k in ("model_load_s", "first_inference_s", "asr_load_s", "asr_first_s")),
                self.peak_rss_mb,
            )
        )
        if self.speculation is not None:
            sp = self.speculation
            lines.append(f"  speculative recognition: {sp['used']} used, {sp['discarded']} discarded, {sp['skipped_busy']} skipped "
                         f"(busy); {sp['compute_s']:.2f} s of compute, {sp['wasted_s']:.2f} s of it discarded")
        lines.append(
            f"  dropped: {self.dropped_blocks} audio block(s), {self.dropped_utterances} utterance(s); "
            f"JSONL lines lost: {self.jsonl_lines_lost}; memory resets: {self.memory_resets}; backend {self.backend}"
        )
        if self.jsonl_cut_line_found:
            lines.append("  the events file ended inside a line (an earlier run cut short, or an edit): that line stays as it was, "
                         "new events start on the next line")
        return "\n".join(lines)


@dataclass
class RunCounters:
    """What the live pipeline counts while it runs (samples, utterances, drops, queue depths,
    compute and latency per stage); ``summary()`` turns it into the run's ``Summary``."""

    audio_samples: int = 0
    segmented: int = 0  # utterances the VAD cut, processed or dropped
    audio_drops: int = 0  # blocks the pipeline's own audio queue dropped (a live source's own drops are its)
    utterance_drops: int = 0
    max_audio_q: int = 0
    max_utt_q: int = 0
    stage_seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in STAGES})
    compute: dict[str, float] = field(default_factory=lambda: {"asr": 0.0, "features": 0.0, "fusion": 0.0})  # seconds
    latencies: list[float] = field(default_factory=list)  # VAD decision -> event
    speech_end_latencies: list[float] = field(default_factory=list)  # last voiced sample -> event

    def add_event(self, stages: dict[str, float], vad_seconds: float, total: float, speech_end: float) -> None:
        """One event's stage times, VAD compute and latencies, in seconds."""
        for k, v in stages.items():
            self.stage_seconds[k].append(v)
        self.stage_seconds["vad_compute"].append(vad_seconds)
        self.latencies.append(total)
        self.speech_end_latencies.append(speech_end)

    def summary(self, *, utterances: int, wall: float, vad_seconds: float, speculation: dict[str, Any] | None,
                **report: Any) -> Summary:
        """The run's Summary: the counted figures, plus ``report``'s fields as they are (backend,
        source, cold_start, dropped_blocks of the source, memory_resets, ...)."""
        audio_s = self.audio_samples / SAMPLE_RATE
        compute_ms = {"vad": 1000.0 * float(vad_seconds), **{k: 1000.0 * v for k, v in self.compute.items()}}
        if speculation is not None:
            compute_ms["speculation_discarded"] = 1000.0 * speculation["wasted_s"]
        compute = sum(compute_ms.values()) / 1000.0
        report["dropped_blocks"] = int(report.get("dropped_blocks", 0)) + self.audio_drops
        return Summary(
            utterances=utterances,
            audio_seconds=audio_s,
            wall_seconds=wall,
            compute_seconds=compute,
            real_time_factor=compute / audio_s if audio_s > 0 else 0.0,
            latency_ms=percentiles(self.latencies),
            speech_end_latency_ms=percentiles(self.speech_end_latencies),
            stage_ms={k: 1000.0 * float(np.mean(v)) for k, v in self.stage_seconds.items() if v},
            speculation=speculation,
            compute_ms=compute_ms,
            dropped_utterances=self.utterance_drops,
            max_queue={"audio": self.max_audio_q, "utterances": self.max_utt_q},
            peak_rss_mb=peak_rss_mb(),
            **report,
        )


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not ms.size:
        return {}
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)), "mean": float(ms.mean()),
            "max": float(ms.max())}
