"""What the voice says and what the words say, measured (docs/VOICES.md).

Runs an exported fusion model that has the uni-modal heads (``audio_probs``, ``text_probs``) over
whole dialogues of a manifest's test split on the runtime's offline path (each dialogue with its
own memory, one fusion call per utterance), then reports:

- each head's own accuracy and weighted F1 next to the fused model's;
- how often the heads part under the event rule (``edge_runtime.heads.parts``) for several
  confidence thresholds, and the fused accuracy when they agree vs when they part;
- in the utterances where they part: which head is right and which one the fused decision follows;
- the gate figure the events reported until now (mean level-2 gate per direction): its spread,
  its value by case (heads agree / part, fused right / wrong) and with every transcript emptied,
  and how well it separates those cases (ROC AUC; 0.5 = not at all), next to the same figures for
  the heads' disagreement margin.

    python -m studies.voice_and_words --model artifacts/model.onnx --manifest .../manifest.jsonl \
        [--split test] [--limit N] [--threads 1] [--out runs/voice-and-words]

Writes ``voice_and_words.json`` and ``voice_and_words.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from calibration.data import build_eval_set, evaluate
from edge_runtime.backends import OnnxBackend
from edge_runtime.heads import DISAGREE_MIN_CONFIDENCE, disagreement_mask
from edge_runtime.offline import run_dialogues
from hbaf.contract import AUDIO_PROBS, TEXT_PROBS
from hbaf.errors import HBAFError
from hbaf.metrics import classification_report

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for ``positive`` (Mann-Whitney, ties count half); None for one class."""
    pos, neg = score[positive], score[~positive]
    if not pos.size or not neg.size:
        return None
    ranks = np.empty(score.size)
    order = np.argsort(score, kind="mergesort")
    ranks[order] = np.arange(1, score.size + 1)
    for v in np.unique(score):  # average ranks of ties
        tie = score == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[positive].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def stats(x: np.ndarray) -> dict:
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else None, "std": float(x.std()) if x.size else None}


def rate(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def measure(probs: np.ndarray, audio: np.ndarray, text: np.ndarray, gate: np.ndarray, y: np.ndarray,
            labels: list[str], blank_gate: np.ndarray | None) -> dict:
    fused_pred, voice_pred, words_pred = probs.argmax(1), audio.argmax(1), text.argmax(1)
    right = fused_pred == y
    res: dict = {"n": int(y.size)}
    for name, pred in (("fused", fused_pred), ("voice", voice_pred), ("words", words_pred)):
        rep = classification_report(y, pred, labels)
        res[name] = {k: rep[k] for k in ("accuracy", "weighted_f1", "unweighted_accuracy")}
    res["top_labels_differ"] = rate(voice_pred != words_pred)
    rows = []
    for thr in THRESHOLDS:
        part = disagreement_mask(audio, text, thr)
        rows.append({"min_confidence": thr, "disagree_rate": rate(part), "n_disagree": int(part.sum()),
                     "fused_acc_agree": rate(right[~part]), "fused_acc_disagree": rate(right[part]),
                     "voice_right_when_disagree": rate((voice_pred == y)[part]),
                     "words_right_when_disagree": rate((words_pred == y)[part]),
                     "fused_follows_voice_when_disagree": rate((fused_pred == voice_pred)[part]),
                     "fused_follows_words_when_disagree": rate((fused_pred == words_pred)[part])})
    res["by_threshold"] = rows
    part = disagreement_mask(audio, text, DISAGREE_MIN_CONFIDENCE)
    same = voice_pred == words_pred
    res["heads_agree"] = {"rate": rate(same), "fused_acc": rate(right[same]), "fused_acc_differ": rate(right[~same])}
    # the gate figure the events reported: does it say anything about the utterance?
    margin = np.abs(audio.max(1) - text.max(1))
    gate_rows = {}
    for k, direction in enumerate(("text_to_audio", "audio_to_text")):
        g = gate[:, k]
        gate_rows[direction] = {
            "all": stats(g), "heads_part": stats(g[part]), "heads_agree": stats(g[~part]),
            "fused_right": stats(g[right]), "fused_wrong": stats(g[~right]),
            "auc_heads_part": auc(g, part), "auc_fused_wrong": auc(g, ~right),
            "empty_transcripts": stats(blank_gate[:, k]) if blank_gate is not None else None,
        }
    res["gate"] = gate_rows
    conf = np.minimum(audio.max(1), text.max(1))
    res["heads_signal"] = {"auc_fused_wrong_from_disagree": auc(part.astype(float), ~right),
                           "auc_fused_wrong_from_low_fused_confidence": auc(-probs.max(1), ~right),
                           "min_head_confidence": stats(conf), "confidence_margin": stats(margin)}
    return res


def markdown(res: dict, what: str) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [f"{what}, {res['n']} utterances.", "",
             "| model | accuracy | weighted F1 | UA |", "|---|---|---|---|"]
    for name, label in (("fused", "fused (probs)"), ("voice", "voice: audio-alone head"), ("words", "words: text-alone head")):
        r = res[name]
        lines.append(f"| {label} | {pct(r['accuracy'])} | {pct(r['weighted_f1'])} | {pct(r['unweighted_accuracy'])} |")
    lines += ["", "| rule: top labels differ and both heads >= | disagree | fused acc. when they agree | fused acc. when they disagree "
              "| voice right / words right (disagree) | fused follows voice / words (disagree) |",
              "|---|---|---|---|---|---|"]
    for r in res["by_threshold"]:
        mark = " (events)" if abs(r["min_confidence"] - DISAGREE_MIN_CONFIDENCE) < 1e-9 else ""
        lines.append(f"| {r['min_confidence']:.1f}{mark} | {pct(r['disagree_rate'])} % ({r['n_disagree']}) | "
                     f"{pct(r['fused_acc_agree'])} | {pct(r['fused_acc_disagree'])} | "
                     f"{pct(r['voice_right_when_disagree'])} / {pct(r['words_right_when_disagree'])} | "
                     f"{pct(r['fused_follows_voice_when_disagree'])} / {pct(r['fused_follows_words_when_disagree'])} |")
    lines += ["", "| gate (mean level-2 gate) | all | heads agree | heads part | fused right | fused wrong | empty transcripts "
              "| AUC: part | AUC: fused wrong |", "|---|---|---|---|---|---|---|---|---|"]

    def ms(s):
        return "-" if not s or s["mean"] is None else f"{s['mean']:.3f} +- {s['std']:.3f}"

    for direction, g in res["gate"].items():
        lines.append(f"| {direction.replace('_', ' ')} | {ms(g['all'])} | {ms(g['heads_agree'])} | {ms(g['heads_part'])} | "
                     f"{ms(g['fused_right'])} | {ms(g['fused_wrong'])} | {ms(g['empty_transcripts'])} | "
                     f"{g['auc_heads_part']:.3f} | {g['auc_fused_wrong']:.3f} |")
    h = res["heads_signal"]
    lines += ["", f"Fused decision wrong, ROC AUC: from `disagree` {h['auc_fused_wrong_from_disagree']:.3f}, "
              f"from low fused confidence {h['auc_fused_wrong_from_low_fused_confidence']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studies.voice_and_words", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="an exported fusion ONNX with audio_probs/text_probs")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="at most N utterances (whole dialogues)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="feature-extraction processes")
    ap.add_argument("--no-blank", action="store_true", help="skip the run with every transcript emptied")
    ap.add_argument("--what", default="MELD-TTS test split (synthetic speech)")
    ap.add_argument("--out", default="runs/voice-and-words")
    args = ap.parse_args(argv)
    try:
        backend = OnnxBackend(args.model, threads=args.threads, providers=["CPUExecutionProvider"])
        missing = [n for n in (AUDIO_PROBS, TEXT_PROBS) if n not in backend.spec.outputs]
        if missing:
            raise HBAFError(f"{args.model} has no {', '.join(missing)} output(s); export it again with `hbaf-export onnx`")
        t0 = time.perf_counter()
        data = build_eval_set(backend, args.manifest, split=args.split, limit=args.limit, workers=args.workers)
        out = evaluate(backend, data, desc="fusion")
        blank = None
        if not args.no_blank:
            d = data.dialogues
            blank = run_dialogues(backend, data.tokenizer, d.groups, d.feats, [""] * len(d), desc="empty transcripts")["gate"]
        res = measure(out["probs"], out[AUDIO_PROBS], out[TEXT_PROBS], out["gate"], data.y, backend.labels, blank)
    except HBAFError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res.update(model=str(args.model), manifest=str(args.manifest), split=args.split, what=args.what,
               events_min_confidence=DISAGREE_MIN_CONFIDENCE, seconds=round(time.perf_counter() - t0, 1))
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "voice_and_words.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res, args.what)
    (folder / "voice_and_words.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
