"""Where end-to-end emotion accuracy is lost: offline model vs runtime path vs full runtime.

On whole MELD-TTS test dialogues (synthetic speech; seeded choice), the same model file the
runtime uses is scored in these conditions:

  a   offline: the corpus clip, the reference text, memory reset per dialogue (= `hbaf evaluate`)
  a0  as a, without dialogue memory
  b'  runtime path: dialogues joined into one stream (1.2 s pauses, as tests/test_conversation.py),
      Silero VAD segments, log-mel of the segment, reference text, memory reset per dialogue
  b   as b', with the runtime's own memory (carried across dialogue boundaries: the pauses are
      shorter than --reset-after)
  c'  as b', with the ASR transcript
  c   the full runtime: VAD segments, ASR text, runtime memory
  b-, b.  as b with the reference text stripped of punctuation, or with '!' written as '.'
      (what an ASR transcript loses even when every word is right)

Every fusion call is the runtime's own: conditions a/a0 replay the dialogues through
edge_runtime.offline.run_dialogues, the others call edge_runtime.offline.fuse_utterance on the
segments in stream order; features are hbaf.features.utterance_features of the clip or segment.
Transcripts of each ASR setting are cached in OUT, so decoding options can be compared on the
same segments (WER raw and normalised, ASR seconds per utterance).

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/e2e_analysis.py --utterances 300 --out runs/e2e
    ... --asr '{"beam_size": 5}' --tag beam5     # another decoding setting on the same segments
"""

from __future__ import annotations

import json
import math
import random
import time
from argparse import RawDescriptionHelpFormatter
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.asr import WhisperASR, basic_words, corpus_wer
from edge_runtime.model_files import open_backend
from edge_runtime.memory import DialogueMemory
from edge_runtime.offline import fuse_utterance, run_dialogues
from edge_runtime.vad import Segmenter
from hbaf.data.manifest import load_manifest
from hbaf.data.meld_tts import default_corpus_dir
from hbaf.data.store import group_dialogues
from hbaf.errors import ArgumentParser, HBAFError, cli_entry
from hbaf.features import SAMPLE_RATE, load_audio, utterance_features

PAUSE_S = 1.2
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "hbaf" / "assets" / "default.onnx"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def choose_dialogues(records, n: int, seed: int) -> list[list[int]]:
    groups = group_dialogues(records)
    random.Random(seed).shuffle(groups)
    out, total = [], 0
    for g in groups:
        if total >= n:
            break
        out.append(g)
        total += len(g)
    return out


def offline(backend, tok, dialogues, waves: dict[int, np.ndarray], texts: Sequence[str], *, use_memory=True) -> np.ndarray:
    """Each clip whole, reference text, memory emptied at every dialogue start (the runtime's
    offline path); probabilities [N, C] indexed like ``texts`` (rows of other records stay 0)."""
    out = run_dialogues(backend, tok, dialogues, lambda i: utterance_features(waves[i], backend.spec.feature_kind), texts, window=None if use_memory else 0)
    return out["probs"]


def build_stream(dialogues, waves):
    pieces = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    turns, t = [], int(0.5 * SAMPLE_RATE)
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    for d, g in enumerate(dialogues):
        for i in g:
            pieces += [waves[i], pause]
            turns.append({"rec": i, "dialogue": d, "start": t, "end": t + waves[i].size})
            t += waves[i].size + pause.size
    return np.concatenate(pieces), turns


def segment(stream: np.ndarray) -> list[tuple[int, int]]:
    seg = Segmenter()
    utts = []
    for a in range(0, stream.size, 4096):
        utts += seg.accept(stream[a : a + 4096])
    utts += seg.flush()
    return [(int(round(u.start * SAMPLE_RATE)), int(round(u.end * SAMPLE_RATE))) for u in utts]


def match(turns, segs):
    """For each turn, the segments that overlap it most (segment -> its best turn)."""
    owner = []
    for s, e in segs:
        best, best_ov = None, 0
        for k, t in enumerate(turns):
            ov = min(e, t["end"]) - max(s, t["start"])
            if ov > best_ov:
                best, best_ov = k, ov
        owner.append(best)
    per_turn = [[j for j, o in enumerate(owner) if o == k] for k in range(len(turns))]
    return owner, per_turn


def runtime(backend, tok, stream, segs, owner, turns, seg_texts, *, reset_per_dialogue: bool) -> list[np.ndarray]:
    """Segments in stream order through fuse_utterance with one DialogueMemory, as the pipeline does."""
    mem = DialogueMemory(backend.context_size, backend.memory_dim)
    probs, last_dialogue = [], None
    for j, (s, e) in enumerate(segs):
        d = turns[owner[j]]["dialogue"] if owner[j] is not None else last_dialogue
        if reset_per_dialogue and d != last_dialogue:
            mem.reset()
        last_dialogue = d
        feats = utterance_features(stream[s:e], backend.spec.feature_kind)
        out, _ = fuse_utterance(backend, tok, mem, feats, seg_texts[j], s / SAMPLE_RATE, e / SAMPLE_RATE)
        probs.append(out["probs"][0])
    return probs


def transcribe_all(stream, segs, asr_kwargs: dict, threads: int) -> tuple[list[str], list[float]]:
    asr = WhisperASR(device="cpu", cpu_threads=threads, **asr_kwargs)
    asr.warmup()
    texts, secs = [], []
    for s, e in segs:
        r = asr.transcribe(stream[s:e])
        texts.append(r.text)
        secs.append(r.seconds)
    return texts, secs


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="scripts/e2e_analysis.py", description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--manifest", default=str(default_corpus_dir() / "manifest.jsonl"))
    ap.add_argument("--out", default="runs/e2e-analysis")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--asr", default="{}", help="WhisperASR keyword arguments as JSON")
    ap.add_argument("--tag", default="default", help="name of this ASR setting (its transcripts are cached)")
    ap.add_argument("--full-offline", action="store_true", help="also score condition a on the whole test split")
    args = ap.parse_args(argv)
    try:
        asr_kwargs = json.loads(args.asr)
    except ValueError as err:
        raise HBAFError(f"--asr {args.asr!r} is not JSON ({err}); pass e.g. --asr '{{\"beam_size\": 5}}'") from err
    if not isinstance(asr_kwargs, dict):
        raise HBAFError(f"--asr {args.asr!r} must be a JSON object of WhisperASR keyword arguments")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    records = [r for r in load_manifest(args.manifest, check_audio=False) if r.split == "test"]
    backend = open_backend(args.model, threads=args.threads)
    tok = backend.tokenizer()
    labels = backend.labels
    all_texts = [r.text for r in records]
    report: dict = {"model": str(args.model), "synthetic_speech": True}

    if args.full_offline:
        t0 = time.time()
        groups = group_dialogues(records)
        waves = {i: load_audio(records[i].audio) for g in groups for i in g}
        probs = offline(backend, tok, groups, waves, all_texts)
        y = [records[i].label for i in range(len(records))]
        p = [labels[int(np.argmax(probs[i]))] for i in range(len(records))]
        recall = {lab: float(np.mean([pp == lab for pp, yy in zip(p, y) if yy == lab])) for lab in labels}
        report["full_test_offline"] = {"n": len(records), "accuracy": float(np.mean([a == b for a, b in zip(p, y)])),
                                       "recall": recall, "label_counts": dict(Counter(y)), "seconds": time.time() - t0}
        print(f"a on the full test split: n={len(records)} accuracy {report['full_test_offline']['accuracy']:.3f}")
        print("  per-class recall:", {k: round(v, 3) for k, v in recall.items()})
        (out / "full_offline.json").write_text(json.dumps(report["full_test_offline"], indent=2))
        del waves

    dialogues = choose_dialogues(records, args.utterances, args.seed)
    idx = [i for g in dialogues for i in g]
    waves = {i: load_audio(records[i].audio) for i in idx}
    texts = {i: records[i].text for i in idx}
    y = {i: records[i].label for i in idx}
    n = len(idx)

    stream, turns = build_stream(dialogues, waves)
    seg_file = out / f"segments-seed{args.seed}-n{args.utterances}.json"
    if seg_file.exists():
        segs = [tuple(x) for x in json.loads(seg_file.read_text())]
    else:
        t0 = time.time()
        segs = segment(stream)
        seg_file.write_text(json.dumps(segs))
        print(f"VAD: {len(segs)} segments in {time.time() - t0:.1f} s")
    owner, per_turn = match(turns, segs)
    single = [k for k, js in enumerate(per_turn) if len(js) == 1 and owner.count(owner[js[0]]) == 1]
    report["sample"] = {"dialogues": len(dialogues), "utterances": n, "audio_seconds": stream.size / SAMPLE_RATE,
                        "segments": len(segs), "turns_missed": sum(1 for js in per_turn if not js),
                        "turns_split": sum(1 for js in per_turn if len(js) > 1),
                        "segments_unmatched": sum(1 for o in owner if o is None),
                        "turns_with_one_segment": len(single), "label_counts": dict(Counter(y.values()))}
    print("sample:", report["sample"])

    def turn_pred(seg_probs) -> dict[int, str]:
        """A turn's prediction: its segment's top class; a split turn takes its longest segment."""
        pred = {}
        for k, js in enumerate(per_turn):
            if js:
                j = max(js, key=lambda j: segs[j][1] - segs[j][0])
                pred[turns[k]["rec"]] = labels[int(np.argmax(seg_probs[j]))]
        return pred

    def score(pred: dict[int, str], name: str, what: str) -> None:
        k = sum(pred.get(i) == y[i] for i in idx)
        lo, hi = wilson(k, n)
        report.setdefault("conditions", {})[name] = {"what": what, "n": n, "correct": int(k), "accuracy": k / n,
                                                     "ci95": [lo, hi]}
        print(f"{name:>3}  {k:4d}/{n} = {100 * k / n:5.1f} %  [{100 * lo:.1f}, {100 * hi:.1f}]  {what}")

    ref_seg_text = [texts[turns[o]["rec"]] if o is not None else "" for o in owner]
    pa = offline(backend, tok, dialogues, waves, all_texts)
    score({i: labels[int(np.argmax(pa[i]))] for i in idx}, "a", "offline: corpus clip, reference text, memory per dialogue")
    pa0 = offline(backend, tok, dialogues, waves, all_texts, use_memory=False)
    score({i: labels[int(np.argmax(pa0[i]))] for i in idx}, "a0", "offline without dialogue memory")
    pb1 = runtime(backend, tok, stream, segs, owner, turns, ref_seg_text, reset_per_dialogue=True)
    score(turn_pred(pb1), "b'", "VAD segment, reference text, memory reset per dialogue")
    pb = runtime(backend, tok, stream, segs, owner, turns, ref_seg_text, reset_per_dialogue=False)
    score(turn_pred(pb), "b", "VAD segment, reference text, runtime memory (carried across dialogues)")

    plain = [" ".join(basic_words(t)) for t in ref_seg_text]
    pbp = runtime(backend, tok, stream, segs, owner, turns, plain, reset_per_dialogue=False)
    score(turn_pred(pbp), "b-", "as b, reference text lower-cased without punctuation")
    calm = [t.replace("!", ".") for t in ref_seg_text]
    pbc = runtime(backend, tok, stream, segs, owner, turns, calm, reset_per_dialogue=False)
    score(turn_pred(pbc), "b.", "as b, reference text with '!' written as '.'")

    asr_file = out / f"asr-{args.tag}-seed{args.seed}-n{args.utterances}.json"
    if asr_file.exists():
        cached = json.loads(asr_file.read_text())
        hyp, secs = cached["texts"], cached["seconds"]
    else:
        t0 = time.time()
        hyp, secs = transcribe_all(stream, segs, asr_kwargs, args.threads)
        asr_file.write_text(json.dumps({"asr": asr_kwargs, "texts": hyp, "seconds": secs}))
        print(f"ASR ({args.tag}): {time.time() - t0:.1f} s")
    pc1 = runtime(backend, tok, stream, segs, owner, turns, hyp, reset_per_dialogue=True)
    score(turn_pred(pc1), "c'", "VAD segment, ASR text, memory reset per dialogue")
    pc = runtime(backend, tok, stream, segs, owner, turns, hyp, reset_per_dialogue=False)
    score(turn_pred(pc), "c", "full runtime: VAD segment, ASR text, runtime memory")

    # WER per turn: the transcripts of its segments joined
    pairs = [(texts[turns[k]["rec"]], " ".join(hyp[j] for j in js)) for k, js in enumerate(per_turn)]
    secs_arr = np.asarray(secs)
    report["asr"] = {"tag": args.tag, "kwargs": asr_kwargs, "wer_raw": corpus_wer(pairs, normalize=False),
                     "wer_normalised": corpus_wer(pairs, normalize=True),
                     "asr_ms_p50": float(np.percentile(secs_arr, 50) * 1000), "asr_ms_mean": float(secs_arr.mean() * 1000),
                     "asr_ms_p90": float(np.percentile(secs_arr, 90) * 1000), "threads": args.threads}
    print(f"WER ({args.tag}): raw {100 * report['asr']['wer_raw']:.1f} %, normalised {100 * report['asr']['wer_normalised']:.1f} %; "
          f"ASR ms/utterance p50 {report['asr']['asr_ms_p50']:.0f}, mean {report['asr']['asr_ms_mean']:.0f} ({args.threads} thread)")
    # accuracy of the runtime path by whether the transcript was right
    per_turn_wer = {turns[k]["rec"]: corpus_wer([pairs[k]]) for k in range(len(turns))}
    pb_t, pc_t = turn_pred(pb), turn_pred(pc)
    for name, cond in (("exact transcript", lambda w: w == 0), ("1+ word errors", lambda w: w > 0)):
        sel = [i for i in idx if cond(per_turn_wer[i])]
        if sel:
            report.setdefault("by_transcript", {})[name] = {
                "n": len(sel), "b": float(np.mean([pb_t.get(i) == y[i] for i in sel])),
                "c": float(np.mean([pc_t.get(i) == y[i] for i in sel]))}
    print("by transcript:", report.get("by_transcript"))
    # per-class recall on the sample (a and c)
    pa_lab = {i: labels[int(np.argmax(pa[i]))] for i in idx}
    report["recall_sample"] = {lab: {"n": sum(1 for i in idx if y[i] == lab),
                                     "a": float(np.mean([pa_lab[i] == lab for i in idx if y[i] == lab])),
                                     "c": float(np.mean([pc_t.get(i) == lab for i in idx if y[i] == lab]))}
                               for lab in labels if any(y[i] == lab for i in idx)}
    report["prediction_counts"] = {"a": dict(Counter(pa_lab.values())), "c": dict(Counter(pc_t.values()))}
    (out / f"report-{args.tag}-seed{args.seed}-n{args.utterances}.json").write_text(json.dumps(report, indent=2))
    (out / f"pairs-{args.tag}-seed{args.seed}-n{args.utterances}.json").write_text(json.dumps(pairs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
