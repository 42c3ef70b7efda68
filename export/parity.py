"""PyTorch vs ONNX Runtime, measured on the runtime's own path.

Both sides are runtime backends (``TorchBackend`` on the checkpoint, ``OnnxBackend`` on the
exported file, ONNX Runtime's CPU kernels) and real speech goes through
``edge_runtime.offline.run_dialogues``: each backend runs whole dialogues utterance by
utterance with its own dialogue memory, exactly as the device does. ``smoke_parity`` is the
quick check ``export_onnx`` runs on every file it writes (random contract feeds, two shapes).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from edge_runtime.backends import Backend, TorchBackend, onnx_cpu
from edge_runtime.dialogues import DialogueSet, load_records
from hbaf.contract import batch_feeds
from hbaf.data.store import take_dialogues
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

SMOKE_TOLERANCE = 1e-3  # max |probs diff| on random inputs before an export counts as broken


def smoke_parity(reference: Backend, path: str | os.PathLike, *, vocab_size: int, threads: int = 2) -> float:
    """Random contract feeds at batch 1 and a padded batch 3: the ONNX file must reproduce
    ``reference`` (catches a broken export early). Returns the max |probs diff| over ``probs`` and
    the uni-modal heads."""
    spec = reference.spec
    candidate = onnx_cpu(path, threads)
    rng = np.random.default_rng(1)
    worst = 0.0
    for lengths in (((57, 5),), ((301, 17), (210, 9), (150, 8))):
        b = len(lengths)
        feats = [rng.standard_normal((t, spec.feature_dim)).astype(np.float32) for t, _ in lengths]
        ids = [rng.integers(1, vocab_size, n).astype(np.int32) for _, n in lengths]
        memory = rng.standard_normal((b, spec.context_size, spec.memory_dim)).astype(np.float32)
        feeds = batch_feeds(spec, feats, ids, memory, np.ones((b, spec.context_size), np.float32))
        want, got = reference.run(feeds), candidate.run(feeds)
        for name in ("probs", *spec.head_outputs):  # the fused classifier and the uni-modal heads
            worst = max(worst, float(np.abs(want[name] - got[name]).max()))
    if not worst < SMOKE_TOLERANCE:
        raise HBAFError(f"ONNX Runtime disagrees with PyTorch on {path} (max |probs diff| {worst:.3g}); "
                        "this is an export bug, try --exporter torchscript")
    log.info("ONNX Runtime vs PyTorch on random inputs: max |probs diff| %.2g", worst)
    return worst


def parity(checkpoint_dir: str | os.PathLike, onnx_path: str | os.PathLike, manifest: str | os.PathLike, n: int = 64,
           *, batch: int = 4, threads: int = 2, workers: int | None = None) -> dict:
    """PyTorch vs ONNX Runtime (CPU) on ``n`` real utterances (whole dialogues) of ``manifest``.

    Sequential (batch 1): both backends run the dialogues through the runtime's offline path,
    each feeding its own ``utt_emb`` back as the dialogue memory. Batched: the same utterances in
    padded batches of ``batch`` (different T and L per row, the memory each one saw in PyTorch's
    sequential run), compared with PyTorch on the same batch and with ONNX Runtime's own batch-1
    result on that memory, which shows that the masks make padding irrelevant.
    """
    if n < 1:
        raise HBAFError(f"--parity-n must be >= 1, got {n}")
    if batch < 1:
        raise HBAFError(f"the parity batch size must be >= 1, got {batch}")
    torch_backend = TorchBackend(checkpoint_dir)
    onnx_backend = onnx_cpu(onnx_path, threads)
    onnx_backend.spec.check_same_model(torch_backend.spec, f"{onnx_path} and checkpoint {checkpoint_dir}",
                                       "export the ONNX again from this checkpoint")
    data = DialogueSet.load(manifest, take_dialogues(load_records(manifest), n), "parity", workers,
                           kind=torch_backend.spec.feature_kind)
    feats = data.feats
    ref = data.run(torch_backend, torch_backend.tokenizer(), desc="parity: PyTorch")
    got = data.run(onnx_backend, onnx_backend.tokenizer(), desc="parity: ONNX Runtime")

    tokenizer = torch_backend.tokenizer()
    tokens = [tokenizer([t]) for t in data.texts]  # one text: no padding
    batched_vs_torch = batched_vs_single = 0.0
    batched_agree = 0
    for start in range(0, len(data), batch):
        sel = list(range(start, min(start + batch, len(data))))
        feeds = batch_feeds(onnx_backend.spec, [feats[i] for i in sel], [tokens[i][0][0] for i in sel],
                            ref["memory"][sel], ref["memory_mask"][sel])
        p_t = torch_backend.run(feeds)["probs"]
        p_o = onnx_backend.run(feeds)["probs"]
        batched_vs_torch = max(batched_vs_torch, float(np.abs(p_t - p_o).max()))
        batched_agree += int((p_t.argmax(1) == p_o.argmax(1)).sum())
        singles = np.concatenate([onnx_backend.run(onnx_backend.feeds(feats[i], *tokens[i], ref["memory"][i],
                                                                      ref["memory_mask"][i]))["probs"] for i in sel])
        batched_vs_single = max(batched_vs_single, float(np.abs(singles - p_o).max()))
    lengths = [feats[i].shape[0] for i in range(len(data))]
    return {
        "onnx": str(onnx_path),
        "checkpoint": str(checkpoint_dir),
        "manifest": str(manifest),
        "n": len(data),
        "dialogues": len(data.groups),
        "frames_min_max": [int(min(lengths)), int(max(lengths))],
        "sequential_max_abs_prob_diff": float(np.abs(ref["probs"] - got["probs"]).max()),
        "sequential_top1_agreement": float((ref["probs"].argmax(1) == got["probs"].argmax(1)).mean()),
        "sequential_max_utt_emb_diff": float(np.abs(ref["utt_emb"] - got["utt_emb"]).max()),
        "sequential_max_gate_diff": float(np.abs(ref["gate"] - got["gate"]).max()),
        "batch_size": batch,
        "batched_max_abs_prob_diff_vs_torch": batched_vs_torch,
        "batched_top1_agreement_vs_torch": batched_agree / max(1, len(data)),
        "batched_vs_batch1_max_abs_prob_diff": batched_vs_single,
    }

