"""What the voice says and what the words say: the readings of the uni-modal heads and the
disagreement rule every event carries (edge_runtime/heads.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.heads import (
    DISAGREE_MIN_CONFIDENCE,
    Heads,
    Reading,
    disagreement_mask,
    parts,
    read_heads,
    reading,
)
from hbaf.contract import ModelSpec

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def _probs(label: str, confidence: float) -> np.ndarray:
    """A [1, C] distribution whose top label is ``label`` at ``confidence``, the rest shared."""
    p = np.full(len(LABELS), (1.0 - confidence) / (len(LABELS) - 1), np.float32)
    p[LABELS.index(label)] = confidence
    return p[None]


def test_reading_is_the_top_label_and_its_probability():
    r = reading(_probs("joy", 0.81), LABELS)
    assert r == Reading("joy", pytest.approx(0.81))
    assert r.to_dict() == {"emotion": "joy", "confidence": 0.81}
    assert Reading.from_dict(r.to_dict()) == Reading("joy", 0.81) and Reading.from_dict(None) is None
    assert reading(None, LABELS) is None
    assert reading(np.full((1, 7), np.nan, np.float32), LABELS) is None  # a broken output reads as absent
    assert reading(np.ones((1, 3), np.float32), LABELS) is None  # a head of another label set


def test_sarcasm_parts_and_the_threshold_counts_for_both_heads():
    thr = DISAGREE_MIN_CONFIDENCE
    words, voice = Reading("joy", 0.85), Reading("anger", 0.7)  # "great, thanks", said angrily
    assert parts(voice, words) is True
    assert parts(Reading("joy", 0.6), words) is False  # same emotion
    assert parts(Reading("anger", thr - 0.01), words) is False  # an unsure voice does not make a disagreement
    assert parts(voice, Reading("joy", thr - 0.01)) is False  # nor unsure words
    assert parts(Reading("anger", thr), Reading("joy", thr)) is True  # the threshold itself counts
    assert parts(voice, words, min_confidence=0.9) is False
    assert parts(None, words) is None and parts(voice, None) is None  # an older model: unknown, not "agree"


def test_read_heads_from_backend_outputs_and_json_fields():
    out = {"probs": _probs("joy", 0.5), "audio_probs": _probs("anger", 0.72), "text_probs": _probs("joy", 0.9)}
    heads = read_heads(out, LABELS)
    assert heads == Heads(Reading("anger", pytest.approx(0.72)), Reading("joy", pytest.approx(0.9)), True)
    fields = json.loads(json.dumps(heads.to_dict()))
    assert fields == {"voice": {"emotion": "anger", "confidence": 0.72}, "words": {"emotion": "joy", "confidence": 0.9},
                      "disagree": True}
    # a model without the heads (exported before them): null fields, no error
    assert read_heads({"probs": out["probs"]}, LABELS).to_dict() == {"voice": None, "words": None, "disagree": None}
    # a single-modality model: one reading, disagreement unknown
    only_voice = read_heads({"audio_probs": out["audio_probs"]}, LABELS)
    assert only_voice.voice.emotion == "anger" and only_voice.words is None and only_voice.disagree is None
    # a row of a batch
    batch = {k: np.concatenate([v, _probs("neutral", 0.6)]) for k, v in out.items()}
    assert read_heads(batch, LABELS, row=1).to_dict()["disagree"] is False


def test_vectorised_rule_matches_the_event_rule():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 500, len(LABELS))) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mask = disagreement_mask(probs[0], probs[1])
    want = [parts(reading(a, LABELS), reading(t, LABELS)) for a, t in zip(probs[0], probs[1])]
    assert mask.tolist() == want and 0 < mask.sum() < mask.size


def test_spec_outputs_old_and_new_metadata():
    base = {"labels": LABELS, "context_size": 8, "memory_dim": 160, "feature_kind": "whisper-tiny.en"}
    old = ModelSpec.from_metadata(base)  # written before the heads: the three outputs
    assert old.outputs == ("probs", "utt_emb", "gate") and old.head_outputs == ()
    new = ModelSpec.from_metadata({**base, "outputs": ["probs", "utt_emb", "gate", "audio_probs", "text_probs"]})
    assert new.head_outputs == ("audio_probs", "text_probs")
    assert ModelSpec.from_metadata(new.to_metadata()) == new
    assert new.output_shapes(2)["audio_probs"] == (2, 7) and set(old.output_shapes(2)) == {"probs", "utt_emb", "gate"}
    # an output a newer release adds is left alone; the three are always there
    future = ModelSpec.from_metadata({**base, "outputs": ["probs", "utt_emb", "gate", "text_probs", "arousal"]})
    assert future.outputs == ("probs", "utt_emb", "gate", "text_probs")
    config = {"context_size": 8, "d_model": 160, "feature_kind": "whisper-tiny.en"}
    assert ModelSpec.from_config({**config, "modalities": "both"}, LABELS).head_outputs == ("audio_probs", "text_probs")
    assert ModelSpec.from_config({**config, "modalities": "audio"}, LABELS).head_outputs == ("audio_probs",)
    assert ModelSpec.from_config({**config, "modalities": "text"}, LABELS).head_outputs == ("text_probs",)


# ----------------------------------------------------------------------------- events


def _fused(tmp_path, old: bool = False):
    """One fusion call of a tiny model on the runtime's own path; ``old``: as a model exported before
    the heads returns it (the three outputs only)."""
    from edge_runtime.backends import TorchBackend
    from edge_runtime.memory import DialogueMemory
    from edge_runtime.offline import fuse_utterance
    from helpers import fake_states, tiny_checkpoint

    backend = TorchBackend(tiny_checkpoint(tmp_path / "tiny", LABELS))
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    fused, context = fuse_utterance(backend, backend.tokenizer(), memory, fake_states(3), "great, thanks", 0.0, 1.0)
    if old:
        fused = {k: v for k, v in fused.items() if k not in ("audio_probs", "text_probs")}
    return backend, fused, context


class _Utt:
    start, end = 0.5, 1.75


def test_events_jsonl_carries_voice_words_and_disagree(tmp_path):
    import io

    from edge_runtime.events import EventWriter, assemble_event

    backend, fused, context = _fused(tmp_path)
    event = assemble_event(1, _Utt(), "great, thanks", fused, LABELS, min_confidence=None, context=context, latency={})
    want = read_heads(fused, LABELS)
    assert (event.voice, event.words, event.disagree) == (want.voice, want.words, want.disagree)
    path = tmp_path / "events.jsonl"
    out = io.StringIO()
    with EventWriter(path, stdout=out) as writer:
        writer.write(event)
    line = json.loads(path.read_text().splitlines()[0])
    assert line["voice"] == want.voice.to_dict() and line["words"] == want.words.to_dict()
    assert isinstance(line["disagree"], bool) and line["gate"].keys() == {"text_to_audio", "audio_to_text"}
    shown = out.getvalue()
    cut = int(want.voice.confidence * 100 + 1e-9) / 100  # the line cuts the heads' confidences to two decimals
    assert f"voice {want.voice.emotion} {cut:.2f}, words {want.words.emotion}" in shown
    assert "text->audio" not in shown  # the gate stays in the JSON only


def test_an_older_model_leaves_the_fields_out(tmp_path):
    from edge_runtime.events import assemble_event

    _, fused, context = _fused(tmp_path, old=True)
    event = assemble_event(1, _Utt(), "great, thanks", fused, LABELS, min_confidence=None, context=context, latency={})
    d = json.loads(event.to_json())
    assert event.voice is None and event.words is None and event.disagree is None
    assert not {"voice", "words", "disagree"} & set(d) and d["emotion"] in LABELS
    assert event.format_line() == f'[00:00.5-00:01.8] {d["emotion"]} {d["confidence"]:.2f}  "great, thanks"  0 ms'


def test_the_line_shows_a_disagreement():
    from edge_runtime.events import Event

    e = Event(utterance=1, start=3.1, end=4.6, text="Great, thanks.", emotion="joy", confidence=0.62, probs={"joy": 0.62},
              gate={"text_to_audio": 0.51, "audio_to_text": 0.47}, latency_ms={"speech_end": 433.4},
              voice=Reading("anger", 0.71), words=Reading("joy", 0.88), disagree=True)
    assert e.format_line() == '[00:03.1-00:04.6] joy 0.62  "Great, thanks."  (voice anger 0.71, words joy 0.88, DISAGREE)  433 ms'
    assert json.loads(e.to_json())["voice"] == {"emotion": "anger", "confidence": 0.71}
    near = Event(**{**e.__dict__, "words": Reading("anger", 0.3956), "disagree": False})  # 0.3956 < 0.4: shown as 0.39
    assert "(voice anger 0.71, words anger 0.39)" in near.format_line()
