"""Real dialogues of a manifest, replayed on the runtime's offline path.

Export parity, INT8 calibration and evaluation, the Torch-TensorRT calibration batches and
the benchmark's accuracy all take whole dialogues of a manifest, their features from the
shared feature cache and their texts, and run them through
``edge_runtime.offline.run_dialogues`` (a backend, a fresh dialogue memory per dialogue, one
fusion call per utterance) — the path the device runs. The live pipeline does not use this
module; it sits here, below export and calibration, so that both measure on that one path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.offline import run_dialogues
from hbaf.contract import FEATURE_KIND
from hbaf.data.records import Record
from hbaf.data.store import (
    FeatureStore,
    SubStore,
    feature_cache_path,
    manifest_subset,
    group_dialogues,
    take_dialogues,
)
from hbaf.text import Tokenizer

log = logging.getLogger(__name__)

CALIBRATION_SPLITS = ("train", "dev", "test")  # where calibration utterances come from, in preference order


def load_records(manifest: str | os.PathLike) -> list[Record]:
    from hbaf.data.manifest import load_manifest

    return load_manifest(manifest)


def calibration_records(manifest: str | os.PathLike, num: int, seed: int) -> list[Record]:
    """``num`` utterances of whole dialogues (seeded draw) of the manifest's train split (dev, then
    test, when there is none)."""
    chosen = take_dialogues(load_records(manifest), num, splits=CALIBRATION_SPLITS, seed=seed)
    if chosen and chosen[0].split == "test":
        log.warning("manifest %s has no train/dev split; calibrating on test utterances", manifest)
    return chosen


@dataclass
class DialogueSet:
    """Records (whole dialogues), their cached features and their dialogue groups."""

    records: list[Record]
    feats: FeatureStore | SubStore
    groups: list[list[int]]

    @classmethod
    def load(cls, manifest: str | os.PathLike, records: Sequence[Record], tag: str,
             workers: int | None = None, *, kind: str = FEATURE_KIND, condition: str = "clean") -> DialogueSet:
        """Features of ``kind`` (the model's ``spec.feature_kind``) of ``records`` (a subset of
        ``manifest``), under the audio ``condition``, through the feature cache file of ``tag``."""
        records = list(records)
        feats = manifest_subset(manifest, records, kind, condition)
        if feats is None:
            cache = feature_cache_path(manifest, records, tag, kind=kind, condition=condition)
            feats = FeatureStore(records, cache, workers=workers, kind=kind, condition=condition)
        return cls(records, feats, group_dialogues(records))

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def run(self, backend: Backend, tokenizer: Tokenizer, desc: str | None = None) -> dict[str, np.ndarray]:
        """Every dialogue through the runtime's offline path with ``backend``'s own memory."""
        return run_dialogues(backend, tokenizer, self.groups, self.feats, self.texts, desc=desc)
