"""Accuracy and agreement of every backend on a corpus.

Each runnable backend replays the evaluation split's dialogues through the runtime's own
offline path (``edge_runtime.dialogues.DialogueSet.run`` -> ``edge_runtime.offline.run_dialogues``: batch 1, the backend's own utterance
embeddings fed back as the dialogue memory); its weighted F1 and its agreement with the
family's PyTorch FP32 eager model on the same utterances go into its row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.cases import Family
from bench.lineup import BASELINE, TEACHER, Lineup
from edge_runtime.dialogues import DialogueSet
from hbaf.data.records import Record
from hbaf.data.store import FeatureStore, take_dialogues

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """The evaluation utterances (whole dialogues with their cached features) and their labels."""

    dialogues: DialogueSet
    y: np.ndarray
    split: str
    split_total: int  # utterances in the split before ``--eval-limit``
    note: str | None = None

    @property
    def records(self) -> list[Record]:
        return self.dialogues.records

    @property
    def feats(self) -> FeatureStore:
        return self.dialogues.feats

    @property
    def groups(self) -> list[list[int]]:
        return self.dialogues.groups

    @property
    def texts(self) -> list[str]:
        return self.dialogues.texts


def load_eval_data(manifest: Path, labels: Sequence[str], split: str, limit: int | None,
                   workers: int | None = None) -> EvalData:
    """The ``split`` utterances of ``manifest`` (the first non-empty of test, dev, train when it
    has none), whole dialogues up to ``limit``; features through the shared feature cache."""
    from hbaf.data.manifest import load_manifest

    records = load_manifest(manifest, labels=labels)
    chosen = [r for r in records if r.split == split]
    note = None
    if not chosen:
        fallback = next((sp for sp in ("test", "dev", "train") if any(r.split == sp for r in records)), None)
        note = f"manifest has no '{split}' utterances; evaluated on '{fallback}' instead"
        log.warning("%s", note)
        split = fallback or split
        chosen = [r for r in records if r.split == split]
    total = len(chosen)
    if limit:
        chosen = take_dialogues(chosen, limit)
    index = {lab: i for i, lab in enumerate(labels)}
    return EvalData(DialogueSet.load(manifest, chosen, f"bench-{split}", workers), np.array([index[r.label] for r in chosen]),
                    split, total, note)


def compare_probs(ref: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and largest/mean absolute probability difference; non-finite outputs
    (FP16/INT8 overflow) count as disagreement and make the difference infinite."""
    ref = np.asarray(ref, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(probs).all(axis=1)
    agree = (ref.argmax(1) == probs.argmax(1)) & finite
    diff = np.abs(ref - probs)
    return {
        "n": int(ref.shape[0]),
        "top1_agreement": float(agree.mean()) if agree.size else None,
        "max_prob_diff": float(diff[finite].max()) if finite.all() and diff.size else (float("inf") if diff.size else None),
        "mean_prob_diff": float(diff[finite].mean()) if finite.any() else None,
        "non_finite_outputs": int((~finite).sum()),
    }


def evaluate(lineup: Lineup, families: dict[str, Family], data: EvalData) -> None:
    """Sequential dialogue evaluation per runnable backend; fills each row's ``accuracy`` and
    ``agreement``. A backend that fails is marked failed; the baseline failing is an error."""
    from hbaf.metrics import classification_report

    if not data.records:
        return
    outputs: dict[str, dict[str, np.ndarray]] = {}
    ordered = sorted(lineup.runnable(), key=lambda r: 0 if r.key in (BASELINE, TEACHER) else 1)
    for row in ordered:
        fam = families[row.family]
        try:
            out = data.dialogues.run(lineup.backends[row.key], fam.tokenizer, desc=f"evaluate {row.key}")
        except Exception as err:
            if row.key == BASELINE:
                raise
            row.fail("evaluation", err)
            continue
        outputs[row.key] = out
        rep = classification_report(data.y, np.nan_to_num(out["probs"], nan=-1.0).argmax(1), fam.labels)
        row.accuracy = {k: rep[k] for k in ("n", "weighted_f1", "accuracy", "unweighted_accuracy", "macro_f1")}
        row.accuracy["per_class_f1"] = rep["per_class_f1"]
        row.accuracy["confusion_matrix"] = rep["confusion_matrix"]
        ref = outputs.get(fam.baseline)
        if ref is not None and row.key != fam.baseline:
            row.agreement = compare_probs(ref["probs"], out["probs"])
            row.agreement["max_utt_emb_diff"] = float(np.nan_to_num(np.abs(ref["utt_emb"] - out["utt_emb"]), nan=np.inf).max())
