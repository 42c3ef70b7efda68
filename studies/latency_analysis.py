"""The latency a person feels: endpoint (hangover) vs utterance splits, and last voiced sample
-> event of the live pipeline with and without speculative recognition, by ASR beam size.

    python -m studies.latency_analysis --out runs/latency [--threads 2] [--quick]

1. Endpoint table (VAD only, fast): every ``--min-silence-ms`` in MIN_SILENCE_MS over the demo
   conversation, the 60 s MELD conversation of tests/test_conversation.py and a longer MELD
   conversation; for each, how many spoken turns came out as exactly one utterance, how many
   were split in two or more, and how many utterances merged two turns.
2. Live runs: the demo and the 60 s conversation paced in real time (as a microphone
   delivers audio) through the real pipeline (``build_pipeline``), one run per configuration
   in CONFIGS (speculation, beam size, hangover, trailing pad); per run: last voiced sample -> event and VAD decision -> event (p50/p90),
   speculation counts and compute, real-time factor, events per turn and the normalised WER.

3. ASR encoder window (offline, the same clips): Whisper's encoder on a fixed 10 s window vs a
   window sized to the utterance (bucketed), per beam size: normalised WER and ASR time.

All audio is synthetic speech (espeak-ng). Writes ``latency.json`` and ``latency.md`` to --out.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np


from edge_runtime.asr import WhisperASR
from edge_runtime.demo import demo_conversation, demo_script, meld_conversation
from edge_runtime.events import EventWriter
from edge_runtime.options import RunOptions, build_pipeline
from edge_runtime.sources import FileSource
from edge_runtime.vad import WINDOW, Segmenter
from hbaf.audio import load_audio, resample
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import ArgumentParser, cli_entry
from hbaf.io import write_json_atomic, write_text_atomic
from hbaf.wer import corpus_wer

MIN_SILENCE_MS = (100, 150, 200, 250, 300, 400)
WINDOW_POLICIES = (("fixed 10 s", None), ("bucketed, 2 s steps (min 4 s)", 2.0), ("bucketed, 1 s steps (min 4 s)", 1.0))
# (label, speculate, beam, --min-silence-ms, --speech-pad-ms)
CONFIGS = (
    ("release 1: no speculation, beam 5, silence 300 ms, pad 100 ms", False, 5, 300, 100),
    ("speculation, beam 5, silence 300 ms, pad 100 ms", True, 5, 300, 100),
    ("speculation, beam 3, silence 300 ms, pad 100 ms", True, 3, 300, 100),
    ("speculation, beam 2, silence 300 ms, pad 100 ms", True, 2, 300, 100),
    ("speculation, greedy, silence 300 ms, pad 100 ms", True, 1, 300, 100),
    ("speculation, beam 5, silence 300 ms, pad 64 ms", True, 5, 300, 64),
    ("speculation, beam 3, silence 300 ms, pad 64 ms", True, 3, 300, 64),
    ("speculation, beam 5, silence 250 ms, pad 100 ms", True, 5, 250, 100),
)


def match_turns(turns: list[dict], segments: list[tuple[float, float]]) -> dict[str, int]:
    """Turns found as exactly one segment, split over several, missed; segments merging turns."""
    per_turn = [sum(1 for s, e in segments if s < t["end"] and e > t["start"]) for t in turns]
    per_segment = [sum(1 for t in turns if s < t["end"] and e > t["start"]) for s, e in segments]
    return {"turns": len(turns), "segments": len(segments), "one": sum(n == 1 for n in per_turn),
            "split": sum(n > 1 for n in per_turn), "missed": sum(n == 0 for n in per_turn),
            "merged": sum(n > 1 for n in per_segment)}


def conversations(tmp: Path, long_seconds: float) -> dict[str, tuple[Path, list[dict]]]:
    """The three sources of the endpoint tables: the demo, the 60 s MELD conversation and a
    ``long_seconds`` one (rendered into ``tmp``), each as (wav, turns)."""
    demo = demo_conversation()
    demo_turns = [{**t, "label": t["emotion"]} for t in demo_script(demo)]
    conv, conv_turns, _ = meld_conversation(tmp, min_seconds=60.0)
    long_dir = tmp / "long"
    long_dir.mkdir()
    long, long_turns, _ = meld_conversation(long_dir, min_seconds=long_seconds)
    return {"demo": (demo, demo_turns), "60 s conversation": (conv, conv_turns),
            f"{long_seconds:.0f} s conversation": (long, long_turns)}


def machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"


def endpoint_markdown(rows: list[dict]) -> list[str]:
    """The rows of ``endpoint_table`` as a markdown table (header included)."""
    return ["| --min-silence-ms | source | turns | exactly one utterance | split | merged | missed |",
            "|---|---|---|---|---|---|---|"] + [
        f"| {r['min_silence_ms']} | {r['source']} | {r['turns']} | {r['one']} | {r['split']} | {r['merged']} | {r['missed']} |"
        for r in rows]


def endpoint_table(sources: dict[str, tuple[Path, list[dict]]]) -> list[dict]:
    rows = []
    for ms in MIN_SILENCE_MS:
        for name, (wav, turns) in sources.items():
            wave = load_audio(wav)
            seg = Segmenter(min_silence_ms=ms)
            utts = [u for pos in range(0, wave.size, WINDOW) for u in seg.accept(wave[pos : pos + WINDOW])] + seg.flush()
            rows.append({"min_silence_ms": ms, "source": name, **match_turns(turns, [(u.start, u.end) for u in utts])})
    return rows


def asr_window_table(clips: list[np.ndarray], texts: list[str], threads: int, beams: tuple[int, ...]) -> list[dict]:
    """WER and mean ASR time of each encoder-window policy and beam on the same clips."""
    rows = []
    for beam in beams:
        for label, bucket in WINDOW_POLICIES:
            asr = WhisperASR(None, device="cpu", cpu_threads=threads, beam_size=beam, window_bucket_s=bucket)
            asr.warmup()
            hyps, secs = [], []
            for clip in clips:
                result = asr.transcribe(clip)
                hyps.append(result.text)
                secs.append(result.seconds)
            rows.append({"beam": beam, "window": label, "clips": len(clips), "wer": corpus_wer(list(zip(texts, hyps))),
                         "asr_ms_mean": 1000.0 * float(np.mean(secs)), "asr_ms_p90": 1000.0 * float(np.percentile(secs, 90)),
                         "fallbacks": asr.fallbacks})
    return rows


class PacedCallback:
    """What PortAudio does for a microphone, for a machine without a sound card: a thread that
    calls ``MicSource``'s own audio callback with 32 ms blocks of 48 kHz stereo, in real time,
    then closes the source. Everything after the callback is the runtime's real path."""

    active = True

    def __init__(self, mic, wav: Path) -> None:
        wave = resample(load_audio(wav), SAMPLE_RATE, 48000)
        self.frames, self.mic = np.stack([wave, 0.9 * wave], axis=1).astype(np.float32), mic
        mic._stream = self
        threading.Thread(target=self._play, daemon=True).start()

    def _play(self) -> None:
        t0, block = time.perf_counter(), 1536
        for i in range(0, len(self.frames), block):
            time.sleep(max(0.0, t0 + i / 48000 - time.perf_counter()))
            self.mic._callback(self.frames[i : i + block], block, None, None)
        self.mic.close()

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False


def live_run(wav: Path, turns: list[dict], *, speculate: bool, beam: int, min_silence_ms: int, speech_pad_ms: int,
             threads: int, microphone: bool = False) -> dict:
    writer = EventWriter(None, stdout_format="none")
    options = RunOptions(threads=threads, asr_beam=beam, min_silence_ms=min_silence_ms, speech_pad_ms=speech_pad_ms,
                         speculate=speculate, summary_line=False)
    if microphone:
        from edge_runtime.mic import MicSource

        source = MicSource(samplerate=48000, channels=2, queue_blocks=256)
    else:
        source = FileSource(wav, realtime=True)
    try:
        pipe = build_pipeline(source, writer, options)
        if microphone:
            PacedCallback(source, wav)
        summary = pipe.run()
    finally:
        writer.close()
    events = pipe.events
    matched = match_turns(turns, [(e.start, e.end) for e in events])
    pairs = []
    for t in turns:
        hits = [e.text for e in events if e.start < t["end"] and e.end > t["start"]]
        pairs.append((t["text"], " ".join(hits)))
    gap = [e.latency_ms["total"] for e in events]  # VAD decision -> event
    return {"events": len(events), **{k: matched[k] for k in ("one", "split", "missed", "merged")},
            "speech_end_ms": summary.speech_end_latency_ms, "decision_ms": summary.latency_ms,
            "decision_to_event_p50_ms": float(np.percentile(gap, 50)) if gap else None,
            "stage_ms": summary.stage_ms, "speculation": summary.speculation,
            "real_time_factor": summary.real_time_factor, "wer": corpus_wer(pairs)}


def markdown(report: dict) -> str:
    lines = ["# Latency a person feels (synthetic speech, espeak-ng)", "",
             f"Machine: {report['machine']}; {report['threads']} threads; measured {report['date']}.", "",
             "## Endpoint: hangover vs utterances split at pauses (VAD only)", "",
             *endpoint_markdown(report["endpoint"])]
    lines += ["", "## ASR encoder window (offline, clips of the three sources with 0.1 s margins)", "",
              "| beam | encoder window | clips | WER (normalised) | ASR ms mean / p90 | 30 s fallbacks |", "|---|---|---|---|---|---|"]
    for r in report["asr_windows"]:
        lines.append(f"| {r['beam']} | {r['window']} | {r['clips']} | {100 * r['wer']:.1f} % | {r['asr_ms_mean']:.0f} / "
                     f"{r['asr_ms_p90']:.0f} | {r['fallbacks']} |")
    lines += ["", "## Live pipeline, paced in real time", "",
              "| configuration | source | last voiced sample -> event p50 / p90 ms | VAD decision -> event p50 ms | "
              "events / turns (split, merged) | speculation used / discarded / skipped, wasted s | WER | RTF |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["live"]:
        sp = r["speculation"]
        spec = f"{sp['used']} / {sp['discarded']} / {sp['skipped_busy']}, {sp['wasted_s']:.2f}" if sp else "-"
        lines.append(f"| {r['config']} | {r['source']} | {r['speech_end_ms']['p50']:.0f} / {r['speech_end_ms']['p90']:.0f} | "
                     f"{r['decision_ms']['p50']:.0f} | {r['events']} / {r['turns']} ({r['split']}, {r['merged']}) | {spec} | "
                     f"{100 * r['wer']:.1f} % | {r['real_time_factor']:.3f} |")
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m studies.latency_analysis", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/latency", help="output folder (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="the first two configurations on the demo only")
    p.add_argument("--long-seconds", type=float, default=300.0,
                   help="length of the long MELD conversation (VAD and ASR-window tables only)")
    p.add_argument("--skip-live", action="store_true", help="only the VAD and ASR-window tables")
    p.add_argument("--skip-windows", action="store_true", help="leave out the ASR-window table")
    p.add_argument("--only", type=int, nargs="*", default=None, metavar="N",
                   help="run only these live configurations (0-based indexes into CONFIGS)")
    p.add_argument("--microphone", action="store_true",
                   help="also run the demo through the callback-driven microphone path with the first --only configuration")
    args = p.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="hbaf-latency-") as tmp:
        sources = conversations(Path(tmp), args.long_seconds)
        report = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "synthetic_speech": True,
                  "machine": machine(), "endpoint": endpoint_table(sources), "live": []}
        clips, texts = [], []
        for wav, turns in sources.values():
            wave = load_audio(wav)
            for t in turns:
                a, b = int((t["start"] - 0.1) * SAMPLE_RATE), int((t["end"] + 0.1) * SAMPLE_RATE)
                clips.append(wave[max(0, a):b])
                texts.append(t["text"])
        report["asr_windows"] = [] if args.skip_windows else asr_window_table(
            clips[:24] if args.quick else clips, texts, args.threads, (5,) if args.quick else (5, 3, 1))
        configs = () if args.skip_live else CONFIGS[:2] if args.quick else CONFIGS
        if args.only is not None:
            configs = tuple(CONFIGS[i] for i in args.only)
        live_sources = {"demo": sources["demo"]} if args.quick else {k: sources[k] for k in ("demo", "60 s conversation")}
        for label, speculate, beam, ms, pad in configs:
            for name, (wav, turns) in live_sources.items():
                row = live_run(wav, turns, speculate=speculate, beam=beam, min_silence_ms=ms, speech_pad_ms=pad,
                               threads=args.threads)
                report["live"].append({"config": label, "source": name, "turns": len(turns), **row})
                print(f"{label:45s} {name:18s} felt p50 {row['speech_end_ms']['p50']:.0f} ms  decision p50 "
                      f"{row['decision_ms']['p50']:.0f} ms  events {row['events']}/{len(turns)}  WER {100 * row['wer']:.1f} %",
                      flush=True)
    if args.microphone and configs:
        label, speculate, beam, ms, pad = configs[0]
        wav, turns = sources["demo"]
        row = live_run(wav, turns, speculate=speculate, beam=beam, min_silence_ms=ms, speech_pad_ms=pad,
                       threads=args.threads, microphone=True)
        report["live"].append({"config": label, "source": "demo via the microphone callback", "turns": len(turns), **row})
    write_json_atomic(out / "latency.json", report)
    write_text_atomic(out / "latency.md", markdown(report))
    print(f"wrote {out / 'latency.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
