"""The end-to-end run: the live pipeline (VAD, ASR, features, fusion with the dialogue memory),
wired by ``edge_runtime.options.build_pipeline`` exactly as ``hbaf-edge run`` wires it, over
one recording; each stage's share of compute, the real-time factor and end of speech -> event
latency, both from the VAD's end-of-speech decision and from the last voiced sample (what a
person waits), with the speculative recognition counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hbaf.errors import HBAFError

STAGES = ("endpoint", "queue", "asr", "features", "fusion", "vad_compute")  # as in an event's latency_ms


def _percentiles(a: np.ndarray) -> dict[str, float] | None:
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "max": float(a.max())} if a.size else None


def run_e2e(spec: str, model: Path, *, threads: int, asr_model: str | None = None, asr_device: str = "auto",
            asr_beam: int | None = None, realtime: bool = False, speculate: bool = True) -> dict[str, Any]:
    """The real pipeline over the recording ``spec`` (a path, or ``demo``: the synthetic
    conversation) with the fusion model ``model``; ``asr_beam`` None = the runtime's default."""
    from edge_runtime.events import EventWriter
    from edge_runtime.options import RunOptions, build_pipeline
    from edge_runtime.sources import FileSource

    if spec == "demo":
        from edge_runtime.demo import demo_conversation

        wav = demo_conversation()
    else:
        wav = Path(spec).expanduser()
        if not wav.is_file():
            raise HBAFError(f"--e2e {spec}: no such audio file; pass a recording (wav/flac/mp3...) or --e2e demo")
    options = RunOptions(model=model, threads=threads, asr=asr_model, asr_device=asr_device, summary_line=False,
                         speculate=speculate,
                         **({} if asr_beam is None else {"asr_beam": asr_beam}))
    writer = EventWriter(None, stdout_format="none")
    try:
        pipe = build_pipeline(FileSource(wav, realtime=realtime), writer, options)
        summary = pipe.run()
    finally:
        writer.close()
    events = pipe.events
    if not events:
        raise HBAFError(f"the VAD found no speech in {wav}; pass a recording with speech, or --e2e demo")
    asr = pipe.asr
    per = {k: np.array([e.latency_ms[k] for e in events], dtype=np.float64) for k in (*STAGES, "total", "speech_end")}
    processing = per["total"] - per["queue"]
    compute = summary.compute_ms
    compute_total = sum(compute.values()) or 1.0
    durations = np.array([e.end - e.start for e in events])
    near3 = (durations >= 2.0) & (durations <= 4.0)
    return {
        "wav": str(wav),
        "synthetic": spec == "demo",
        "realtime": realtime,
        "model": pipe.backend.describe(),
        "asr": {"model": asr.model_name, "device": asr.device, "compute_type": asr.compute_type, "beam_size": asr.beam_size,
                "forms": asr.describe()},
        "threads": threads,
        "utterances": len(events),
        "audio_seconds": summary.audio_seconds,
        "wall_seconds": summary.wall_seconds,
        "compute_seconds": summary.compute_seconds,
        "real_time_factor": summary.real_time_factor,
        "latency_ms": _percentiles(per["total"]),
        "speech_end_latency_ms": _percentiles(per["speech_end"]),
        "speculation": summary.speculation,
        "processing_ms": _percentiles(processing),
        "latency_2_4s_utterances_ms": _percentiles(per["total"][near3]),
        "processing_2_4s_utterances_ms": _percentiles(processing[near3]),
        "stage_mean_ms": {k: float(per[k].mean()) for k in STAGES},
        "compute_ms": compute,
        "compute_share": {k: v / compute_total for k, v in compute.items()},
        "cold_start": summary.cold_start,
        "peak_rss_mb": summary.peak_rss_mb,
        "dropped_utterances": summary.dropped_utterances,
        "events": [{"start": round(e.start, 3), "end": round(e.end, 3), "text": e.text, "emotion": e.emotion,
                    "latency_ms": {k: round(v, 2) for k, v in e.latency_ms.items()}} for e in events],
    }
