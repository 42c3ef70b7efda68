"""The benchmark's inputs: clips of real speech, and per length x batch the contract feeds of
each model family (the student and its exports, or the teacher).

A clip is cut to the case's length as audio and turned into features with
``hbaf.features.utterance_features``; rows of a batch get shorter towards the end (down to
``SHORTEST_BATCH_ROW`` of the length) and are padded to the longest by
``hbaf.contract.batch_feeds``. Every row carries the family's dialogue memory: K real
utterance embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.memory import DialogueMemory
from edge_runtime.offline import fuse_utterance
from hbaf.audio import load_audio
from hbaf.contract import HOP_LENGTH, SAMPLE_RATE, ModelSpec, batch_feeds
from hbaf.data.records import Record
from hbaf.data.store import group_dialogues
from hbaf.errors import HBAFError
from hbaf.features import utterance_features
from hbaf.text import Tokenizer

SHORTEST_BATCH_ROW = 0.6  # the last row of a batch of L-second clips lasts 0.6 L


@dataclass
class Clip:
    """Real speech at least as long as a benchmark length (one utterance, or consecutive ones joined)."""

    samples: np.ndarray
    text: str
    source: str

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


def _duration(frames: int, hop: int = HOP_LENGTH) -> float:
    return max(0, frames - 1) * hop / SAMPLE_RATE


def select_clips(records: Sequence[Record], frames: Sequence[int], seconds: float, count: int,
                 hop: int = HOP_LENGTH) -> list[Clip]:
    """``count`` clips of real speech lasting at least ``seconds`` (when the pool allows).

    Single utterances first, the shortest long-enough ones; then consecutive utterances of one
    dialogue joined; then, for a pool too short altogether, its utterances joined in order
    (repeated). Clips are repeated when fewer distinct ones exist than ``count``.
    """
    if not records:
        raise HBAFError("no utterances to take benchmark inputs from; check the manifest's evaluation split")
    durations = [_duration(f, hop) for f in frames]
    clips: list[Clip] = []
    audio_cache: dict[int, np.ndarray] = {}

    def audio(i: int) -> np.ndarray:
        if i not in audio_cache:
            audio_cache[i] = load_audio(records[i].audio)
        return audio_cache[i]

    def name(i: int) -> str:
        return f"{records[i].dialogue}#{records[i].index}"

    def joined(parts: list[int], source: str) -> Clip:
        return Clip(np.concatenate([audio(i) for i in parts]), " ".join(records[i].text for i in parts), source)

    for _, i in sorted((d, i) for i, d in enumerate(durations) if d >= seconds)[:count]:
        clips.append(Clip(audio(i), records[i].text, name(i)))
    if len(clips) < count:
        for group in group_dialogues(list(records)):
            start = 0
            while start < len(group) and len(clips) < count:
                parts, total, j = [], 0.0, start
                while j < len(group) and total < seconds:
                    parts.append(group[j])
                    total += durations[group[j]]
                    j += 1
                if total < seconds:
                    break
                if len(parts) > 1:
                    clips.append(joined(parts, f"{name(parts[0])}..{records[parts[-1]].index} joined"))
                start = j
            if len(clips) >= count:
                break
    if not clips:
        parts, total, j = [], 0.0, 0
        while total < seconds and j < 100 * len(records):
            parts.append(j % len(records))
            total += max(durations[j % len(records)], 0.01)
            j += 1
        clips.append(joined(parts, f"{len(parts)} utterances of the pool joined"))
    distinct = len(clips)
    while len(clips) < count:
        clips.append(clips[len(clips) % distinct])
    return clips[:count]


def case_key(seconds: float, batch: int) -> str:
    return f"{seconds:g}s-b{batch}"


@dataclass
class Case:
    """One input shape: ``seconds`` of audio, ``batch`` rows; ``feeds`` per model family."""

    seconds: float
    batch: int
    feeds: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return case_key(self.seconds, self.batch)


@dataclass
class Family:
    """One model's view of the inputs: its baseline row, spec, tokenizer and memory vectors."""

    name: str
    baseline: str  # the row key of the family's PyTorch FP32 eager backend
    spec: ModelSpec
    tokenizer: Tokenizer
    memory: np.ndarray | None = None  # [K, D] real utterance embeddings
    first_call: dict[str, np.ndarray] | None = None  # a 3 s utterance at the start of a dialogue

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)


def token_ids(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """The unpadded token ids [L] of one text."""
    ids, mask = tokenizer([text])
    return ids[0, : int(mask[0].sum())]


def build_case_feeds(clips: Sequence[Clip], seconds: float, batch: int, family: Family, memory: np.ndarray,
                     memory_filled: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Contract feeds for ``batch`` clips cut to ``seconds`` (row j: see the module docstring),
    padded to the longest; every row carries ``memory`` [K, D] (mask 1, or 0 when
    ``memory_filled`` is False: the start of a dialogue)."""
    feats, ids, sources, lengths = [], [], [], []
    for j in range(batch):
        clip = clips[j % len(clips)]
        target = seconds if batch == 1 else seconds * (1.0 - (1.0 - SHORTEST_BATCH_ROW) * j / (batch - 1))
        n = min(clip.samples.size, int(round(target * SAMPLE_RATE)))
        feats.append(utterance_features(clip.samples[:n], family.spec.feature_kind))
        ids.append(token_ids(family.tokenizer, clip.text))
        sources.append(clip.source)
        lengths.append(round(n / SAMPLE_RATE, 3))
    k = memory.shape[0]
    mem = np.repeat(memory[None].astype(np.float32), batch, axis=0)
    mask = np.full((batch, k), 1.0 if memory_filled else 0.0, np.float32)
    feeds = batch_feeds(family.spec, feats, ids, mem, mask)
    info = {"seconds": seconds, "batch": batch, "row_seconds": lengths, "frames": [int(f.shape[0]) for f in feats],
            "tokens": [int(i.shape[0]) for i in ids], "sources": sources, "memory_slots_filled": int(k if memory_filled else 0)}
    return feeds, info


def memory_vectors(backend: Backend, family: Family, feats: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """K real utterance embeddings [K, D] from the family's PyTorch model, each utterance at the
    start of its own dialogue (the runtime's fusion call with an empty memory)."""
    k, d = family.spec.context_size, family.spec.memory_dim
    vecs = []
    for i in range(k):
        j = i % len(texts)
        out, _ = fuse_utterance(backend, family.tokenizer, DialogueMemory(k, d, reset_after=None), feats[j], texts[j], 0.0, 0.0)
        vecs.append(out["utt_emb"][0])
    return np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, d), np.float32)


def build_cases(clips: dict[float, list[Clip]], lengths: Sequence[float], batches: Sequence[int],
                families: Sequence[Family]) -> list[Case]:
    """Every length x batch case, with the feeds of each family (the student's shapes in ``info``)."""
    cases = []
    for sec in lengths:
        for b in batches:
            case = Case(sec, b)
            for fam in families:
                assert fam.memory is not None
                case.feeds[fam.name], info = build_case_feeds(clips[sec], sec, b, fam, fam.memory)
                if fam.name == "student":
                    case.info = info
            cases.append(case)
    return cases
