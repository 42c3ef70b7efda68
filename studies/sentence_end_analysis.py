"""Ending at the sentence (``--sentence-end-ms N``): turns split or merged, WER and the felt latency.

    python -m studies.sentence_end_analysis --out runs/sentence-end [--threads 2] [--rounds 1]

1. Endpoint table (offline): the demo, the 60 s and the 300 s MELD conversations (known turns),
   each cut by the real ``Segmenter`` with ``sentence_end_ms=N``, fed 512 samples at a time; the
   pending utterance is offered to the real ``Speculator`` (the recogniser: Whisper tiny.en,
   CTranslate2 int8, the given beam) exactly as the pipeline offers it, and the speculation is
   waited for before the next window. That is a recogniser that always keeps up, so the
   transcript is there at N ms: the most early ends (and splits) N can give. Per (beam, N):
   turns found as exactly one utterance, split, merged, missed; the utterances ended early; the
   normalised WER of the utterances' transcripts against the turns.
2. Live runs: ``hbaf-edge run --source demo --threads T --asr-beam B --sentence-end-ms N``
   (paced in real time, speculation on) for every (beam, N), one after the other, ``--rounds``
   times; per run the summary's last voiced sample -> event p50/p90, events per turn, WER, the
   utterances ended at a sentence, and the 1-minute load average before and after.

All audio is synthetic speech (espeak-ng). Writes ``sentence_end.json`` and ``sentence_end.md`` to --out.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from edge_runtime.asr import WhisperASR
from edge_runtime.demo import demo_conversation, demo_script, meld_conversation
from edge_runtime.speculate import Speculator
from edge_runtime.vad import WINDOW, Segmenter
from hbaf.audio import load_audio
from hbaf.errors import ArgumentParser, cli_entry
from hbaf.io import write_json_atomic, write_text_atomic
from hbaf.wer import corpus_wer
from studies.latency_analysis import conversations, endpoint_markdown, machine, match_turns
from studies.latency_analysis import endpoint_table as hangover_table

SENTENCE_END_MS = (0, 100, 150, 200, 250)  # 0: today's rule (every utterance ends after --min-silence-ms)
BEAMS = (1, 5)


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def per_turn_text(turns: list[dict], spans: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """(reference, the transcripts of every utterance overlapping the turn, joined) per turn."""
    return [(t["text"], " ".join(x for s, e, x in spans if s < t["end"] and e > t["start"])) for t in turns]


def cut(wave, sentence_end_ms: int, transcribe) -> tuple[list[tuple[float, float, str]], int, list[str]]:
    """The utterances of ``wave`` as the live pipeline would cut them with a recogniser that keeps
    up: (start, end, transcript) each, the number ended at a sentence, and those transcripts."""
    spec = Speculator(transcribe)
    seg = Segmenter(sentence_end_ms=sentence_end_ms, heard_sentence=spec.heard_sentence if sentence_end_ms else None)
    utts, offered, early = [], None, []
    for pos in range(0, wave.size, WINDOW):
        before = seg.sentence_cuts
        got = seg.accept(wave[pos : pos + WINDOW])
        for u in got:
            text = transcribe(u.samples)
            utts.append((u.start, u.end, text))
            if seg.sentence_cuts > before:
                early.append(text)
        if not got and sentence_end_ms:
            key = seg.pending_key()
            if key is not None and key != offered:
                offered = key
                pending = seg.pending()
                spec.offer(pending.key, pending.samples)
                spec.settle()
    utts += [(u.start, u.end, transcribe(u.samples)) for u in seg.flush()]
    spec.close()
    return utts, seg.sentence_cuts, early


def endpoint_table(sources: dict, beams: tuple[int, ...], values: tuple[int, ...], threads: int) -> list[dict]:
    rows = []
    for beam in beams:
        asr = WhisperASR(None, device="cpu", cpu_threads=threads, beam_size=beam)
        asr.warmup()
        for name, (wav, turns) in sources.items():
            wave = load_audio(wav)
            cache: dict[str, str] = {}  # the same samples give the same transcript (tests/test_speculation.py)

            def transcribe(samples, cache=cache):
                digest = hashlib.sha1(samples.tobytes()).hexdigest()
                if digest not in cache:
                    cache[digest] = asr.transcribe(samples).text
                return cache[digest]

            for ms in values:
                t0 = time.perf_counter()
                utts, cuts, early = cut(wave, ms, transcribe)
                m = match_turns(turns, [(s, e) for s, e, _ in utts])
                rows.append({"beam": beam, "sentence_end_ms": ms, "source": name, **m, "sentence_ends": cuts,
                             "wer": corpus_wer(per_turn_text(turns, utts)), "early_texts": early,
                             "split_turns": [t["text"] for t in turns if sum(s < t["end"] and e > t["start"] for s, e, _ in utts) > 1],
                             "seconds": time.perf_counter() - t0})
                r = rows[-1]
                print(f"beam {beam} N {ms:3d} {name:20s} one {r['one']:2d} split {r['split']:2d} merged {r['merged']} "
                      f"missed {r['missed']} sentence ends {cuts:2d} WER {100 * r['wer']:.1f} %", flush=True)
    return rows


def live_demo(beam: int, ms: int, threads: int, out: Path, turns: list[dict], source: str = "demo") -> dict:
    """One paced run (the demo, or a file with --realtime) through the command line; the summary
    and the events from its JSONL."""
    jsonl = out / f"{Path(source).stem}-beam{beam}-n{ms}-{time.strftime('%H%M%S')}.jsonl"
    paced = [] if source == "demo" else ["--realtime"]
    cmd = [str(Path(sys.executable).with_name("hbaf-edge")), "run", "--source", source, *paced, "--threads", str(threads),
           "--asr-beam", str(beam), "--sentence-end-ms", str(ms), "--format", "none", "--output", str(jsonl)]
    load_before = load_1min()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    load_after = load_1min()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    lines = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    summary = lines[-1]["summary"]
    events = [x for x in lines if "summary" not in x]
    m = match_turns(turns, [(e["start"], e["end"]) for e in events])
    felt_line = next(x for x in proc.stderr.splitlines() if "latency last voiced sample -> event" in x).strip()
    return {"beam": beam, "sentence_end_ms": ms, "events": len(events), **m,
            "felt_ms": summary["speech_end_latency_ms"], "decision_ms": summary["latency_ms"],
            "endpoint_ms_mean": summary["stage_ms"].get("endpoint"), "speculation": summary["speculation"],
            "wer": corpus_wer(per_turn_text(turns, [(e["start"], e["end"], e["text"]) for e in events])),
            "load_before": load_before, "load_after": load_after, "summary_line": felt_line, "command": " ".join(cmd[1:])}


def markdown(report: dict) -> str:
    lines = ["# Ending at the sentence (synthetic speech, espeak-ng)", "",
             f"Machine: {report['machine']}; {report['threads']} threads; measured {report['date']}.", "",
             "## Endpoint (offline, a recogniser that keeps up)", "",
             "| beam | --sentence-end-ms | source | turns | exactly one | split | merged | missed | ended at a sentence | WER |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["endpoint"]:
        lines.append(f"| {r['beam']} | {r['sentence_end_ms']} | {r['source']} | {r['turns']} | {r['one']} | {r['split']} | "
                     f"{r['merged']} | {r['missed']} | {r['sentence_ends']} | {100 * r['wer']:.1f} % |")
    lines += ["", "## For comparison: a plain shorter --min-silence-ms for every utterance (VAD only)", "",
              *endpoint_markdown(report.get("hangover", []))]
    lines += ["", "## Live: the demo paced in real time", "",
              "| round | beam | --sentence-end-ms | last voiced sample -> event p50 / p90 ms | mean endpoint ms | events / turns "
              "(split, merged) | ended at a sentence | WER | load 1 min before / after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["live"]:
        lines.append(f"| {r['round']} | {r['beam']} | {r['sentence_end_ms']} | {r['felt_ms']['p50']:.0f} / {r['felt_ms']['p90']:.0f} | "
                     f"{r['endpoint_ms_mean']:.0f} | {r['events']} / {r['turns']} ({r['split']}, {r['merged']}) | "
                     f"{r['speculation'].get('sentence_ends', 0)} | {100 * r['wer']:.1f} % | {r['load_before']:.2f} / {r['load_after']:.2f} |")
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m studies.sentence_end_analysis", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/sentence-end", help="output folder (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--long-seconds", type=float, default=300.0, help="length of the long MELD conversation")
    p.add_argument("--values", type=int, nargs="+", default=list(SENTENCE_END_MS), metavar="N")
    p.add_argument("--beams", type=int, nargs="+", default=list(BEAMS), metavar="B")
    p.add_argument("--rounds", type=int, default=1, help="live runs: how many times every (beam, N) runs")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--skip-endpoint", action="store_true")
    p.add_argument("--live-long", type=str, nargs="*", default=[], metavar="BEAM:N",
                   help="also run the long MELD conversation paced in real time with these beam:N pairs (e.g. 1:0 1:250)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads, "synthetic_speech": True,
              "machine": machine(),
              "recogniser": "Whisper tiny.en, CTranslate2 int8 on the CPU, fixed 10 s window (the default)",
              "endpoint": [], "live": []}
    demo = demo_conversation()
    demo_turns = [{**t, "label": t["emotion"]} for t in demo_script(demo)]
    if not args.skip_endpoint:
        with tempfile.TemporaryDirectory(prefix="hbaf-sentence-end-") as tmp:
            sources = conversations(Path(tmp), args.long_seconds)
            report["endpoint"] = endpoint_table(sources, tuple(args.beams), tuple(args.values), args.threads)
            # for comparison: every utterance ended after a plain shorter --min-silence-ms (VAD only)
            report["hangover"] = [r for r in hangover_table(sources) if r["min_silence_ms"] in (*args.values, 300)]
        write_json_atomic(out / "sentence_end.json", report)
    if not args.skip_live:
        for rnd in range(1, args.rounds + 1):
            for beam in args.beams:
                for ms in args.values:
                    row = live_demo(beam, ms, args.threads, out, demo_turns)
                    report["live"].append({"round": rnd, "turns": len(demo_turns), **row})
                    print(f"round {rnd} beam {beam} N {ms:3d}: {row['summary_line']}  events {row['events']}  split "
                          f"{row['split']}  WER {100 * row['wer']:.1f} %  load {row['load_before']:.2f}/{row['load_after']:.2f}",
                          flush=True)
                    write_json_atomic(out / "sentence_end.json", report)
    if args.live_long:
        long, long_turns, _ = meld_conversation(out, min_seconds=args.long_seconds)
        for pair in args.live_long:
            beam, ms = (int(x) for x in pair.split(":"))
            row = live_demo(beam, ms, args.threads, out, long_turns, source=str(long))
            report["live"].append({"round": f"{args.long_seconds:.0f} s conversation", "turns": len(long_turns), **row})
            print(f"{args.long_seconds:.0f} s conversation beam {beam} N {ms:3d}: {row['summary_line']}  events {row['events']}  "
                  f"split {row['split']}  WER {100 * row['wer']:.1f} %  load {row['load_before']:.2f}/{row['load_after']:.2f}",
                  flush=True)
            write_json_atomic(out / "sentence_end.json", report)
    write_json_atomic(out / "sentence_end.json", report)
    write_text_atomic(out / "sentence_end.md", markdown(report))
    print(f"wrote {out / 'sentence_end.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
