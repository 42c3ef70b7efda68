"""What the voice says and what the words say: the uni-modal heads of one fusion call.

The fusion model trains an audio-alone head and a text-alone head next to the fused classifier;
the exported graph returns them as ``audio_probs`` and ``text_probs`` (hbaf/contract.py). Every
event carries their readings:

    voice     {"emotion": top label of audio_probs, "confidence": its probability}
    words     {"emotion": top label of text_probs,  "confidence": its probability}
    disagree  true when the two part (the rule below), else false

A model exported before the heads existed has neither output: ``voice``, ``words`` and
``disagree`` are then ``None`` on the ``Event`` and **left out** of its JSON line (an optional
field that is None is not written), so such a model's lines are what they always were, and
nothing else changes. A single-modality model has one head: the other reading is ``None`` and
``disagree`` too.

The stdout line shows ``(voice anger 0.71, words joy 0.88, DISAGREE)`` where it showed the gate;
the heads' confidences there are cut (not rounded) to two decimals, so that a reading shown as
0.40 is at the threshold.

The disagreement rule (``parts``): the two heads part when their top labels differ **and each
head is at least ``DISAGREE_MIN_CONFIDENCE`` sure of its own**. A confident "joy" in the words
said in a confident "anger" voice ("great, thanks", said angrily) is the case it is for; two
unsure heads that merely rank different labels first are not a disagreement worth flagging.
The threshold is measured, not guessed: on MELD-TTS test (synthetic speech) the fused decision
is markedly less often right when the heads part this way than when they agree
(docs/VOICES.md, "What the voice says and what the words say").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hbaf.contract import AUDIO_PROBS, TEXT_PROBS

DISAGREE_MIN_CONFIDENCE = 0.4  # each head's top probability at least this for a disagreement (7 classes: chance 0.14)


@dataclass(frozen=True)
class Reading:
    """One head's answer: its top emotion and that emotion's probability."""

    emotion: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"emotion": self.emotion, "confidence": round(float(self.confidence), 4)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Reading | None":
        if not data:
            return None
        return cls(str(data["emotion"]), float(data["confidence"]))


def reading(probs: np.ndarray | None, labels: Sequence[str]) -> Reading | None:
    """The top label of one head's probabilities ([C] or [1, C]); None when the head is absent or
    its output is not finite."""
    if probs is None:
        return None
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size != len(labels) or not np.all(np.isfinite(p)):
        return None
    i = int(p.argmax())
    return Reading(str(labels[i]), float(p[i]))


def _part(voice_top: Any, words_top: Any, voice_conf: Any, words_conf: Any, min_confidence: float) -> Any:
    """The disagreement rule itself, on scalars or element-wise on arrays: different top
    emotions, each head at least ``min_confidence`` sure."""
    return (np.asarray(voice_top) != np.asarray(words_top)) & (np.minimum(voice_conf, words_conf) >= min_confidence)


def parts(voice: Reading | None, words: Reading | None, min_confidence: float = DISAGREE_MIN_CONFIDENCE) -> bool | None:
    """The disagreement rule (``_part``) for one event. None when either reading is missing (an
    older model, or a single-modality one)."""
    if voice is None or words is None:
        return None
    return bool(_part(voice.emotion, words.emotion, voice.confidence, words.confidence, min_confidence))


@dataclass(frozen=True)
class Heads:
    """The two readings of one utterance and whether they part."""

    voice: Reading | None
    words: Reading | None
    disagree: bool | None

    def to_dict(self) -> dict[str, Any]:
        """The event's fields: ``voice``, ``words`` (objects or null) and ``disagree`` (bool or null)."""
        return {"voice": self.voice.to_dict() if self.voice else None,
                "words": self.words.to_dict() if self.words else None,
                "disagree": self.disagree}


def read_heads(out: Mapping[str, np.ndarray], labels: Sequence[str], row: int = 0,
               min_confidence: float = DISAGREE_MIN_CONFIDENCE) -> Heads:
    """The heads of row ``row`` of a backend's outputs (missing outputs read as None)."""
    def head(name: str) -> Reading | None:
        value = out.get(name)
        return None if value is None else reading(np.asarray(value)[row], labels)

    voice, words = head(AUDIO_PROBS), head(TEXT_PROBS)
    return Heads(voice, words, parts(voice, words, min_confidence))


def disagreement_mask(audio_probs: np.ndarray, text_probs: np.ndarray,
                      min_confidence: float = DISAGREE_MIN_CONFIDENCE) -> np.ndarray:
    """``parts`` over a batch [N, C] x [N, C] -> [N] bool (the same rule, ``_part``, element-wise)."""
    a, t = np.asarray(audio_probs), np.asarray(text_probs)
    return _part(a.argmax(1), t.argmax(1), a.max(1), t.max(1), min_confidence)
