"""Check MELD-TTS emotion rendering against known acoustics of emotional speech.

Renders N MELD dev utterances once per emotion per synthesizer family at full intensity (or
reads the WAVs of a corpus manifest with --manifest), extracts openSMILE eGeMAPS
functionals and prints a markdown table by family x emotion: each measure as the
difference from that family's neutral mean, and PASS/FAIL against the expected direction.

    python -m studies.check_prosody --n 12
    python -m studies.check_prosody --manifest ~/.cache/hbaf/corpora/meld-tts/manifest.jsonl
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hbaf.data.meld_text import is_speakable, read_meld_csv
from hbaf.data.prosody import render_params
from hbaf.data.records import MELD_LABELS
from hbaf.data.synth import render_utterance, utterance_name
from hbaf.data.voices import check_families, dialogue_voices
from hbaf.errors import ArgumentParser, cli_entry

F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"
MEASURES = {  # short name -> eGeMAPS functional
    "F0 st": F0,
    "F0 range st": "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "loud": "loudness_sma3_amean",
    "voiced seg/s": "VoicedSegmentsPerSec",
    "dur s": None,  # clip duration (same texts across emotions: slower speech -> longer)
    "jitter": "jitterLocal_sma3nz_amean",
    "shimmer dB": "shimmerLocaldB_sma3nz_amean",
    "HNR dB": "HNRdBACF_sma3nz_amean",
}
# Expected sign of (emotion - neutral) per measure (from the emotional-speech literature).
EXPECTED = {
    "anger": {"F0 st": +1, "F0 range st": +1, "loud": +1, "dur s": -1},
    "joy": {"F0 st": +1, "F0 range st": +1, "loud": +1, "dur s": -1},
    "surprise": {"F0 st": +1, "F0 range st": +1},
    "fear": {"F0 st": +1, "dur s": -1},  # its F0 jitter is slow (bends), not eGeMAPS cycle jitter
    "sadness": {"F0 st": -1, "F0 range st": -1, "loud": -1, "dur s": +1},
    "disgust": {"F0 st": -1, "dur s": +1},
}


def _render(families: tuple[str, ...], n: int, seed: int, out: Path) -> list[dict]:
    """Each of n MELD dev utterances (spread over the split) rendered once per emotion, so
    text, speaker, voice, pauses and noise are the same across emotions and only the
    label-driven prosody differs."""
    utts = [u for u in read_meld_csv("dev") if is_speakable(u["text"]) and len(u["text"].split()) >= 5]
    picked = [utts[int(j)] for j in np.linspace(0, len(utts) - 1, n)]
    rows = []
    for fam in families:
        t0, count = time.perf_counter(), 0
        for u0 in picked:
            voice = dialogue_voices([u0["speaker"]], seed, fam)[u0["speaker"]]
            for lab in MELD_LABELS:
                u = {**u0, "label": lab}
                p = render_params(u, seed=seed, strength=1.0, intensity=1.0, voice=voice, noise_snr_db=(30.0, 30.0))
                path = out / f"{fam}_{lab}_{utterance_name(u)}.wav"
                render_utterance(u, path, p, seed=seed)
                rows.append({"path": str(path), "family": fam, "label": lab})
                count += 1
        dt = time.perf_counter() - t0
        print(f"rendered {count} {fam} utterances in {dt:.1f} s ({count / dt:.1f} utt/s)", file=sys.stderr)
    return rows


def _from_manifest(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append({"path": str(path.parent / r["audio"]), "family": r.get("family", "espeak-ng"), "label": r["label"]})
    return rows


def table(rows: list[dict]) -> tuple[str, int, int]:
    import opensmile
    import soundfile as sf

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    feats: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        df = smile.process_file(r["path"])
        row = {k: float(df[v].iloc[0]) for k, v in MEASURES.items() if v}
        row["dur s"] = sf.info(r["path"]).duration
        feats[(r["family"], r["label"])].append(row)
    mean = {key: {k: float(np.mean([f[k] for f in fs])) for k in MEASURES} for key, fs in feats.items()}
    head = "| family | emotion | n | " + " | ".join(f"Δ {k}" for k in MEASURES) + " | check |"
    lines = [head, "|" + "---|" * (len(MEASURES) + 4)]
    passed = total = 0
    for fam in sorted({f for f, _ in feats}):
        neu = mean.get((fam, "neutral"))
        if neu is None:
            continue
        lines.append(f"| {fam} | neutral | {len(feats[(fam, 'neutral')])} | "
                     + " | ".join(f"{neu[k]:.3g}" for k in MEASURES) + " | (absolute) |")
        for lab in MELD_LABELS[1:]:
            if (fam, lab) not in mean:
                continue
            d = {k: mean[(fam, lab)][k] - neu[k] for k in MEASURES}
            fails = [k for k, sgn in EXPECTED.get(lab, {}).items() if np.sign(d[k]) != sgn]
            total += 1
            passed += not fails
            check = "PASS" if not fails else "FAIL (" + ", ".join(fails) + ")"
            lines.append(f"| {fam} | {lab} | {len(feats[(fam, lab)])} | " + " | ".join(f"{d[k]:+.3g}" for k in MEASURES)
                         + f" | {check} |")
    return "\n".join(lines), passed, total


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m studies.check_prosody", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12, help="utterances per emotion per family (default %(default)s)")
    ap.add_argument("--families", default=None, help="comma-separated families (default: all installed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--manifest", type=Path, default=None, help="measure a built corpus instead of rendering")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            rows = _from_manifest(args.manifest)
        else:
            rows = _render(check_families(args.families), args.n, args.seed, Path(tmp))
        text, passed, total = table(rows)
    print(text)
    print(f"\n{passed}/{total} family x emotion cells move in the expected direction "
          f"(values: emotion mean minus the family's neutral mean; neutral rows absolute)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
