"""The end-of-run report of the live pipeline (printed at exit and written as the last JSONL line)."""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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
