"""A >= 60 s multi-speaker conversation (synthetic speech) through the real `hbaf-edge run`.

Real MELD test dialogues (texts, speakers, emotion labels) are rendered with the
MELD-TTS voices and prosody and joined with pauses. The run must detect every
utterance and emit exactly one event for each. Measured and written to
conversation_report.json (the numbers quoted in the README and docs/E2E_ANALYSIS.md):

- the ASR word error rate, normalised (the standard score) and raw (case and punctuation only);
- the emotion accuracy of the full runtime (VAD segments, ASR text, runtime memory);
- the emotion accuracy of the same model file offline on the same clips with the reference
  text and a memory per dialogue (how `hbaf evaluate` scores it),

so the gap between the model and the product is visible. Twelve utterances are a small
sample (95 % interval of 6/12 is 25-75 %); docs/E2E_ANALYSIS.md measures the same chain on
300 utterances.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.demo import meld_conversation
from hbaf.features import SAMPLE_RATE, utterance_features
from hbaf.wer import corpus_wer

PAUSE_S = 1.2
MIN_SECONDS = 60.0
MODEL = Path(__file__).resolve().parents[1] / "hbaf" / "assets" / "default.onnx"

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                reason="espeak-ng and sox render the conversation; run scripts/install.sh")


def render_conversation(out_dir, intensity=None, min_seconds=MIN_SECONDS):
    return meld_conversation(out_dir, min_seconds=min_seconds, pause_s=PAUSE_S, intensity=intensity)


def clip_segments(wave) -> int:
    """Utterances the runtime's segmenter finds in one clip on its own (0.5 s of silence around it)."""
    from edge_runtime.vad import Segmenter

    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    x = np.concatenate([pad, wave, pad])
    seg, found = Segmenter(), 0
    for a in range(0, x.size, 512):
        found += len(seg.accept(x[a : a + 512]))
    return found + len(seg.flush())


def offline_predictions(turns, waves):
    """The shipped model on the clips themselves, reference text, memory emptied at each MELD
    dialogue (the training/evaluation convention), through the runtime's own fusion call."""
    from edge_runtime.model_files import open_backend
    from edge_runtime.memory import DialogueMemory
    from edge_runtime.offline import fuse_utterance

    backend = open_backend(MODEL, threads=1)
    tok = backend.tokenizer()
    preds, dialogue, memory = [], None, None
    for turn, wave in zip(turns, waves):
        if turn["dialogue"] != dialogue:
            dialogue, memory = turn["dialogue"], DialogueMemory(backend.context_size, backend.memory_dim)
        out, _ = fuse_utterance(backend, tok, memory, utterance_features(wave, backend.spec.feature_kind), turn["text"], turn["start"], turn["end"])
        preds.append(backend.labels[int(np.argmax(out["probs"][0]))])
    return preds


@pytest.mark.slow
def test_sixty_second_conversation(tmp_path):
    wav, turns, waves = render_conversation(tmp_path)
    assert sf.info(wav).duration >= MIN_SECONDS and len({t["speaker"] for t in turns}) >= 2
    events_file = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "--source", str(wav), "--output",
                           str(events_file), "--threads", "2", "--format", "none"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    events = [e for e in lines if "summary" not in e]
    # every utterance detected, and the stream segmented as each clip alone is: a turn overlaps as
    # many events as the segmenter finds in its clip on its own (one, unless the rendered speech
    # holds a pause longer than the VAD's hangover, e.g. "Left! ... Left!")
    matched, heard, expected = [], [], []
    for turn, wave in zip(turns, waves):
        hits = [e for e in events if e["start"] < turn["end"] and e["end"] > turn["start"]]
        expected.append(clip_segments(wave))
        assert len(hits) == expected[-1], (turn, hits)
        matched.append(max(hits, key=lambda e: e["end"] - e["start"]))
        heard.append(" ".join(e["text"] for e in hits))
    assert len(events) == sum(expected) and sum(expected) <= len(turns) + 2
    pairs = [(t["text"], h) for t, h in zip(turns, heard)]
    wer = corpus_wer(pairs)
    wer_raw = corpus_wer(pairs, normalize=False)
    labels = [t["label"] for t in turns]
    runtime = [e["emotion"] for e in matched]
    offline = offline_predictions(turns, waves)
    accuracy = float(np.mean([p == y for p, y in zip(runtime, labels)]))
    offline_accuracy = float(np.mean([p == y for p, y in zip(offline, labels)]))
    report = {"audio_seconds": sf.info(wav).duration, "utterances": len(turns), "events": len(events),
              "speakers": len({t["speaker"] for t in turns}), "wer": wer, "wer_raw": wer_raw,
              "emotion_accuracy": accuracy, "emotion_accuracy_offline": offline_accuracy,
              "labels": labels, "predicted": runtime, "predicted_offline": offline,
              "transcripts": heard, "synthetic_speech": True}
    (tmp_path / "conversation_report.json").write_text(json.dumps(report, indent=2))
    print(f"\nconversation (synthetic speech): {report['audio_seconds']:.1f} s, {len(turns)} utterances, "
          f"{report['speakers']} speakers\n  WER {100 * wer:.1f} % normalised ({100 * wer_raw:.1f} % raw)\n"
          f"  emotion accuracy: runtime (ASR text) {100 * accuracy:.1f} %, "
          f"offline model on the same clips with reference text {100 * offline_accuracy:.1f} %")
    for t, e, o, h in zip(turns, matched, offline, heard):
        print(f"  {t['label']:>8} runtime {e['emotion']:>8} offline {o:>8} | {t['text']} | {h}")
    # Whisper tiny.en (beam 5) on these espeak-ng voices and MELD's conversational text measures
    # 0.221 normalised (0.237 raw; greedy decoding gave 0.254 / 0.297); 0.25 leaves room for
    # CPU/library numerics, not for a regression to the old decoding.
    assert wer <= 0.25, pairs
    # The runtime chain must not lose more than two of these 12 utterances to the offline model on
    # the same clips. The shipped student trained on the recogniser's own transcripts for half of
    # its clips (`--asr-transcripts`) and loses one net here (runtime 6, offline 7: Whisper writes
    # "There is no more left, left!" as "...left. Left.", heard as neutral); release 2.0's student, trained on rule-based ASR-style
    # text only, lost three (docs/VOICES.md). A segmentation, memory or decoding fault loses far more.
    assert sum(p == y for p, y in zip(runtime, labels)) >= sum(p == y for p, y in zip(offline, labels)) - 2
