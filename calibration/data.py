"""The utterances INT8 calibration and evaluation run on.

Both are whole dialogues of a manifest: features from the shared feature cache
(``hbaf.data.store.FeatureStore``), token ids from the model's tokenizer, and every model
run through the runtime's offline path (``edge_runtime.offline.run_dialogues``: a backend,
a fresh dialogue memory per dialogue, one fusion call per utterance).

Calibration: ``num`` utterances (whole dialogues, seeded) of the manifest's train split
(dev, then test, when there is no train split: ``edge_runtime.dialogues.calibration_records``); each utterance's dialogue memory is the one
the FP32 model produced for it on that path, so the memory ranges are the ones the runtime
produces. Evaluation: the test split (or ``--eval-split``), optionally cut to whole dialogues.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.backends import Backend, OnnxBackend, onnx_cpu
from edge_runtime.dialogues import DialogueSet, calibration_records, load_records
from hbaf.data.store import take_dialogues
from hbaf.errors import HBAFError
from hbaf.text import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """Feeds (batch 1, the export contract) for ``n`` real utterances, with where they came from."""

    feeds: list[dict[str, np.ndarray]]
    manifest: str
    split: str
    seed: int
    dialogues: int
    manifest_sha256: str

    @property
    def n(self) -> int:
        return len(self.feeds)


@dataclass
class EvalSet:
    """Utterances of one split (whole dialogues) ready to run, with their labels and the tokenizer
    every evaluated model uses."""

    dialogues: DialogueSet
    y: np.ndarray
    split: str
    tokenizer: Tokenizer

    def __len__(self) -> int:
        return len(self.dialogues)


def open_fp32(path: str | os.PathLike, threads: int | None = 2) -> OnnxBackend:
    """The FP32 model calibration and evaluation start from (ONNX Runtime CPU); a quantized model is refused."""
    backend = onnx_cpu(path, threads)
    if backend.precision == "int8":
        raise HBAFError(f"{path} is already quantized; calibrate the FP32 model written by `hbaf-export onnx`")
    return backend


def model_tokenizer(backend: OnnxBackend, override: str | os.PathLike | None = None) -> Tokenizer:
    """``--tokenizer`` when given, else the backend's own (next to the model, the source checkpoint's,
    else the text encoder's: ``edge_runtime.backends.resolve_tokenizer``)."""
    if override:
        return Tokenizer(override, backend.max_tokens)
    tokenizer = backend.tokenizer()
    expected = backend.meta.get("tokenizer_sha256")
    if expected:
        from hbaf.checkpoint import sha256_file

        if sha256_file(tokenizer.file) != expected:
            log.warning("%s differs from the tokenizer the model was exported with", tokenizer.file)
    return tokenizer


def build_calibration_set(fp32: OnnxBackend, manifest: str | os.PathLike, *, num: int = 512, seed: int = 0,
                          tokenizer: str | os.PathLike | None = None, workers: int | None = None) -> CalibrationSet:
    """Feeds for ``num`` utterances of whole dialogues (seeded), memory from the FP32 model."""
    from hbaf.checkpoint import sha256_file

    if num < 1:
        raise HBAFError(f"--num must be >= 1 calibration utterances, got {num}")
    data = DialogueSet.load(manifest, calibration_records(manifest, num, seed), "calib", workers,
                           kind=fp32.spec.feature_kind)
    tok = model_tokenizer(fp32, tokenizer)
    seen = data.run(fp32, tok, desc="calibration: FP32 dialogue memory")
    feeds = [fp32.feeds(data.feats[i], *tok([text]), seen["memory"][i], seen["memory_mask"][i])
             for i, text in enumerate(data.texts)]
    return CalibrationSet(feeds, str(manifest), data.records[0].split, seed, len(data.groups), sha256_file(manifest))


def build_eval_set(fp32: OnnxBackend, manifest: str | os.PathLike, *, split: str = "test", limit: int | None = None,
                   tokenizer: str | os.PathLike | None = None, workers: int | None = None) -> EvalSet:
    """The ``split`` utterances of ``manifest`` (at most ``limit``, whole dialogues), labelled with ``fp32``'s labels."""
    labels = fp32.labels
    chosen = [r for r in load_records(manifest) if r.split == split]
    if not chosen:
        raise HBAFError(f"manifest {manifest} has no '{split}' utterances to evaluate on; add a test split or pass --eval-split dev")
    unknown = sorted({r.label for r in chosen} - set(labels))
    if unknown:
        raise HBAFError(f"labels {unknown} in {manifest} are not the model's labels {labels}; evaluate on data with the model's label set")
    if limit:
        chosen = take_dialogues(chosen, limit)
    index = {lab: i for i, lab in enumerate(labels)}
    return EvalSet(DialogueSet.load(manifest, chosen, split, workers, kind=fp32.spec.feature_kind), np.array([index[r.label] for r in chosen]), split,
                   model_tokenizer(fp32, tokenizer))


def evaluate(backend: Backend, data: EvalSet, *, desc: str | None = None) -> dict[str, np.ndarray]:
    """Sequential dialogue evaluation on the runtime's offline path (the model feeds its own memory)."""
    return data.dialogues.run(backend, data.tokenizer, desc=desc)


def evaluate_onnx(onnx_path: str | os.PathLike, data: EvalSet, *, threads: int = 2, desc: str | None = None) -> dict[str, np.ndarray]:
    """``evaluate`` for an ONNX file on ONNX Runtime's CPU kernels."""
    return evaluate(onnx_cpu(Path(onnx_path), threads), data, desc=desc)
