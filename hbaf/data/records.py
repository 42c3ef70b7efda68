"""The one internal record every loader produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    """One utterance.

    audio: absolute path of a 16 kHz (or any rate; resampled on load) audio file.
    text: the transcript (may be empty: the model then leans on audio).
    label: emotion name, as the dataset spells it (lower case).
    speaker, dialogue: identifiers (strings); ``index`` is the position in the dialogue.
    split: "train", "dev" or "test".
    family: the kind of voice (a synthesizer family such as "espeak-ng" or "flite", or empty for
    recordings of people); lets a training run hold one family out entirely.
    """

    audio: str
    text: str
    label: str
    speaker: str
    dialogue: str
    index: int
    split: str
    family: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SPLITS = ("train", "dev", "test")
MELD_LABELS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")  # MELD's seven emotions
