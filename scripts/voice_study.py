"""The real-voices study: log-mel vs Whisper-encoder audio branch, unseen voice family, degraded audio.

Every run is an ordinary `hbaf` command (printed before it starts, so any row can be redone
by hand) on one MELD-TTS corpus rendered with several synthesizer families
(`hbaf make-corpus --families ...`); a run whose folder already holds its result is reused.

    python scripts/voice_study.py --corpus DIR --out runs/study [--steps 240] [--hold-out espeak-ng]
        [--only student-whisper,student-logmel,...]

Runs (all the student size, the same optimizer steps, `--asr-text 0.5`):

    student-whisper         Whisper tiny.en encoder states, one augmented copy of every clip
    student-logmel          release 1's log-mel front end, the same augmentation
    student-whisper-noaug   Whisper states, no augmentation (what augmentation adds)
    holdout-whisper         Whisper states, the --hold-out family left out of train and dev
    holdout-logmel          log-mel, the same family left out
    teacher-whisper         the teacher size (for distillation)
    student-distilled       the student distilled from teacher-whisper
    audio-whisper, audio-logmel, audio-holdout-whisper, audio-holdout-logmel
                            the audio branch alone (``--modalities audio``), 6 epochs

then, for the students trained on every family, the fused test score under each degraded
condition (hbaf.data.augment.CONDITIONS) on a seeded subset of test dialogues. Writes
``summary.md`` and ``summary.json`` into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONDITIONS = ("clean", "noise-10db", "reverb", "telephone", "gain+12", "gain-12")


def _hbaf(*args: str) -> list[str]:
    return [sys.executable, "-m", "hbaf.cli", *args]


def runs(args: argparse.Namespace) -> dict[str, list[str]]:
    base = ["--corpus", args.corpus, "--epochs", str(args.epochs), "--max-steps", str(args.steps), "--asr-text", "0.5",
            "--threads", str(args.threads), "--workers", str(args.workers)]
    student = ["train", *base, "--preset", "student"]
    audio = ["train", "--corpus", args.corpus, "--epochs", str(args.audio_epochs), "--asr-text", "0.5", "--threads",
             str(args.threads), "--workers", str(args.workers), "--preset", "student", "--modalities", "audio"]
    out = {
        "student-whisper": [*student, "--features", "whisper-tiny.en", "--augment", "1"],
        "student-logmel": [*student, "--features", "log-mel", "--augment", "1"],
        "student-whisper-noaug": [*student, "--features", "whisper-tiny.en", "--augment", "0"],
        "holdout-whisper": [*student, "--features", "whisper-tiny.en", "--augment", "1", "--hold-out-family", args.hold_out],
        "holdout-logmel": [*student, "--features", "log-mel", "--augment", "1", "--hold-out-family", args.hold_out],
        # the audio branch alone (no text encoder): cheap, so 6 epochs
        "audio-whisper": [*audio, "--features", "whisper-tiny.en", "--augment", "1"],
        "audio-logmel": [*audio, "--features", "log-mel", "--augment", "1"],
        "audio-holdout-whisper": [*audio, "--features", "whisper-tiny.en", "--augment", "1", "--hold-out-family", args.hold_out],
        "audio-holdout-logmel": [*audio, "--features", "log-mel", "--augment", "1", "--hold-out-family", args.hold_out],
        "teacher-whisper": ["train", *base[:4], "--max-steps", str(args.teacher_steps), *base[6:], "--preset", "teacher",
                            "--features", "whisper-tiny.en", "--augment", "1"],
        "student-distilled": ["distill", *base, "--teacher", str(Path(args.out) / "teacher-whisper"), "--preset", "student",
                              "--features", "whisper-tiny.en", "--augment", "1"],
    }
    return {name: _hbaf(*cmd, "--out", str(Path(args.out) / name)) for name, cmd in out.items()}


def run(cmd: list[str], log: Path) -> None:
    print("$ " + " ".join(cmd[2:]).replace("hbaf.cli", "hbaf"), flush=True)
    t0 = time.time()
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"error: the run failed (exit {proc.returncode}); see {log}")
    print(f"  done in {time.time() - t0:.0f} s", flush=True)


def degraded(args: argparse.Namespace, name: str) -> dict[str, dict]:
    folder = Path(args.out) / name
    out = {}
    for cond in CONDITIONS:
        result = folder / f"eval_test_{cond}.json" if cond != "clean" else folder / "eval_test_clean.json"
        if not result.exists():
            cmd = _hbaf("evaluate", "--corpus", args.corpus, "--checkpoint", str(folder), "--split", "test",
                        "--limit", str(args.degraded_limit), "--condition", cond, "--workers", str(args.workers),
                        "--out", str(folder / "degraded"))
            run(cmd, Path(args.out) / "study.log")
            made = folder / "degraded" / (f"eval_test_{cond}.json" if cond != "clean" else "eval_test.json")
            result.write_text(made.read_text())
        rep = json.loads(result.read_text())
        out[cond] = {k: rep[k] for k in ("weighted_f1", "accuracy", "unweighted_accuracy")}
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summarize(args: argparse.Namespace, names: list[str], deg: dict[str, dict]) -> str:
    rows = ["| run | audio input | trained on | test weighted F1 (fused) | audio-only weighted F1 | audio-only UA | "
            f"{args.hold_out} test: fused wF1 / audio-only UA | other families: fused wF1 / audio-only UA | train s |",
            "|---|---|---|---|---|---|---|---|---|"]
    table = {}
    for name in names:
        path = Path(args.out) / name / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        fam = m.get("test_by_family", {})
        audio_model = m["preset_config"].get("modalities") == "audio"
        if audio_model:  # the audio branch alone: its one prediction is the audio-only one
            m["test_audio_only"] = m["test"]
            fam = {f: {"audio_only": v["fused"]} for f, v in fam.items()}
        held = fam.get(args.hold_out, {})
        others = [f for f in fam if f != args.hold_out]
        n_o = sum(next(iter(fam[f].values()))["n"] for f in others) or 1

        def pooled(part: str, key: str) -> float | None:
            vals = [(fam[f][part][key], fam[f][part]["n"]) for f in others if part in fam[f]]
            return sum(v * n for v, n in vals) / n_o if vals else None

        aud = m.get("test_audio_only", {})
        kind = m.get("feature_kind") or m["preset_config"].get("feature_kind", "log-mel")
        trained = f"all but {m['hold_out_family']}" if m.get("hold_out_family") else "all families"
        fused = None if audio_model else m["test"]["weighted_f1"]
        rows.append(f"| {name} | {kind} | {trained} | {_pct(fused)} | {_pct(aud.get('weighted_f1'))} | "
                    f"{_pct(aud.get('unweighted_accuracy'))} | {_pct(held.get('fused', {}).get('weighted_f1'))} / "
                    f"{_pct(held.get('audio_only', {}).get('unweighted_accuracy'))} | {_pct(pooled('fused', 'weighted_f1'))} / "
                    f"{_pct(pooled('audio_only', 'unweighted_accuracy'))} | {m.get('train_seconds', 0):.0f} |")
        table[name] = m
    lines = ["Synthetic speech (MELD-TTS, several synthesizer families); test split.", "", *rows]
    if deg:
        lines += ["", f"Degraded audio, fused weighted F1 on {args.degraded_limit} test utterances (whole dialogues, seeded):", "",
                  "| run | " + " | ".join(CONDITIONS) + " | worst drop |", "|---|" + "---|" * (len(CONDITIONS) + 1)]
        for name, conds in deg.items():
            clean = conds["clean"]["weighted_f1"]
            worst = max(clean - c["weighted_f1"] for c in conds.values())
            lines.append(f"| {name} | " + " | ".join(_pct(conds[c]["weighted_f1"]) for c in CONDITIONS) + f" | {100 * worst:.1f} |")
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "summary.md").write_text(text)
    (Path(args.out) / "summary.json").write_text(json.dumps({"runs": table, "degraded": deg}, indent=1) + "\n")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=240, help="optimizer steps of every student run")
    ap.add_argument("--teacher-steps", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--audio-epochs", type=int, default=6, help="epochs of the audio-only runs")
    ap.add_argument("--hold-out", default="espeak-ng", help="the voice family left out of the hold-out runs")
    ap.add_argument("--degraded-limit", type=int, default=600)
    ap.add_argument("--degraded", default="student-whisper,student-logmel,student-whisper-noaug",
                    help="runs evaluated under every degraded condition")
    ap.add_argument("--only", default=None, help="comma-separated run names (default: all, in order)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plan = runs(args)
    names = args.only.split(",") if args.only else list(plan)
    for name in names:
        if not (Path(args.out) / name / "metrics.json").exists():
            run(plan[name], Path(args.out) / "study.log")
    deg = {}
    for name in args.degraded.split(","):
        if name in names and (Path(args.out) / name / "metrics.json").exists():
            deg[name] = degraded(args, name)
    print(summarize(args, list(plan), deg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
