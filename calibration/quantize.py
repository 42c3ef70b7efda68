"""Explicit INT8 (Q/DQ) ONNX: graph preparation, calibration ranges, the two flavours, checks.

What gets quantized: the inputs (activation and weight) of the GEMMs with constant weights
(MatMul, Gemm and the audio subsampling Conv(s)), their outputs stay float. Activation x
activation MatMuls (attention scores and context), the dynamic gate's Linear, the
attention-mask adds, Softmax, LayerNorm, GELU (Erf), residual Adds, the pooling and the
gate means stay float. ONNX Runtime's QDQ quantizer rewires *every* reader of a quantized
tensor to the dequantized copy (so a residual Add would read INT8-rounded values); we point
every reader that is not one of the chosen GEMMs back at the float tensor afterwards and
verify the placement. The uni-modal heads (``audio_probs``, ``text_probs``) are graph outputs
like ``probs``: their Linear is one of the GEMMs, their Softmax stays float, and
``check_outputs_kept`` fails a run whose INT8 graph lost an output its metadata lists.

Two flavours from one calibration (the tensor ranges are computed once per method):

- ``trt``: symmetric int8 activations (zero point 0) and per-channel symmetric int8
  weights -- what TensorRT's explicit-quantization path needs. Slow on ONNX Runtime CPU
  (it is used for the engine and to measure INT8 accuracy). The word-embedding table
  stays float (TensorRT stores it at the engine's precision).
- ``cpu``: uint8 (asymmetric) activations and per-channel int8 weights, the form ONNX
  Runtime's CPU kernels run fastest, plus the word-embedding table stored as per-row
  int8 (weight-only: Gather int8 rows, then scale) -- the table is most of the file.

``quantize_dynamic_cpu`` is the calibration-free alternative for CPU (activation ranges
measured per call); the comparison command reports it next to the static flavours.
The calibration feeds come from calibration/data.py.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.data import CalibrationSet
from hbaf.checkpoint import sha256_file
from hbaf.contract import (
    GRAPH_ORT_CPU,
    TOKENIZER_FILE,
    graph_kind,
    onnx_metadata,
    read_onnx,
    save_onnx,
    set_onnx_metadata,
    spec_from_onnx,
)
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, quiet_output
from hbaf.onnx_graph import add_contrib_types, consumers

log = logging.getLogger(__name__)

FLAVOURS = ("trt", "cpu")
METHODS = ("minmax", "entropy", "percentile")
QUANT_METADATA_KEY = "hbaf_quantization"
GEMM_OPS = ("MatMul", "Gemm", "Conv")
# readers a DequantizeLinear output may have; anything else means a Q/DQ feeds a float-only op
ALLOWED_DQ_READERS = frozenset(GEMM_OPS) | {"Gather"}


def _reader(feeds: Sequence[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class FeedsReader(CalibrationDataReader):
        """Hands ONNX Runtime's calibrator the prepared feeds one utterance at a time."""

        def __init__(self, items):
            self._items = list(items)
            self._it = iter(self._items)

        def get_next(self):
            return next(self._it, None)

        def __len__(self):
            return len(self._items)

    return FeedsReader(feeds)


# ----------------------------------------------------------------------------- graph preparation


def prepare(fp32_onnx: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """quant_pre_process (ONNX shape inference + ONNX Runtime's basic optimizations), unique
    node names, and graph outputs that are also read inside the graph routed through an Identity
    (the quantizer would otherwise hand the runtime a quantized ``utt_emb``)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    proto = read_onnx(fp32_onnx)
    meta = list(proto.metadata_props)
    # ONNX shape inference gives every activation its type, which is all the QDQ quantizer
    # needs here; ORT's symbolic shape inference gives up on the subsampled frame axis and
    # then drops a temporary model into the working directory, so it is skipped.
    with _quiet():
        quant_pre_process(str(fp32_onnx), str(out_path), skip_symbolic_shape=True)
    pre = onnx.load(str(out_path))
    used = set()
    for i, node in enumerate(pre.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)
    _split_read_outputs(pre)
    add_contrib_types(pre)
    keys = {p.key for p in meta}
    kept = [p for p in pre.metadata_props if p.key not in keys]  # e.g. the pre-processing marker
    del pre.metadata_props[:]
    pre.metadata_props.extend(kept + meta)
    onnx.save_model(onnx.shape_inference.infer_shapes(pre), str(out_path))  # types for the renamed tensors too
    return out_path


def _split_read_outputs(proto) -> None:
    from onnx import helper

    graph = proto.graph
    outputs = {o.name for o in graph.output}
    readers = {name for n in graph.node for name in n.input}
    for name in sorted(outputs & readers):
        inner = f"{name}__value"
        for node in graph.node:
            for i, out in enumerate(node.output):
                if out == name:
                    node.output[i] = inner
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = inner
        graph.node.append(helper.make_node("Identity", [inner], [name], name=f"{name}__output"))


def select_gemm_nodes(proto, include_conv: bool = True) -> tuple[list[str], dict[str, str]]:
    """(names of the nodes to quantize, {excluded node: reason}) among MatMul/Gemm/Conv."""
    graph = proto.graph
    weights = {i.name for i in graph.initializer}
    users = consumers(graph)
    chosen: list[str] = []
    excluded: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in GEMM_OPS:
            continue
        if node.op_type == "Conv" and not include_conv:
            excluded[node.name] = "Conv kept float (include_conv=False)"
        elif len(node.input) < 2 or node.input[1] not in weights:
            excluded[node.name] = "activation x activation (attention scores/context)"
        elif _feeds_gate(node, users):
            excluded[node.name] = "dynamic gate Linear (stays float)"
        else:
            chosen.append(node.name)
    return chosen, excluded


def _feeds_gate(node, users) -> bool:
    """True when the node's output reaches a Sigmoid directly or through its bias Add."""
    frontier = list(users.get(node.output[0], []))
    for nxt in list(frontier):
        if nxt.op_type == "Add":
            frontier.extend(users.get(nxt.output[0], []))
    return any(n.op_type == "Sigmoid" for n in frontier)


# ----------------------------------------------------------------------------- calibration


def activation_tensors(proto, nodes: Sequence[str]) -> list[str]:
    """The float (non-constant) inputs of the chosen GEMMs: the only tensors that need ranges."""
    weights = {i.name for i in proto.graph.initializer}
    chosen = set(nodes)
    out: list[str] = []
    for node in proto.graph.node:
        if node.name in chosen and node.input[0] not in weights and node.input[0] not in out:
            out.append(node.input[0])
    return out


# ORT's defaults for each method (percentile: 99.999 % of |x| with 2048 bins; entropy: KL over 128 bins)
_CALIBRATORS = {
    "minmax": ("MinMaxCalibrater", {"symmetric": False}),
    "entropy": ("EntropyCalibrater", {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128}),
    "percentile": ("PercentileCalibrater", {"symmetric": True, "num_bins": 2048, "percentile": 99.999}),
}


def calibrate(prepared: str | os.PathLike, calib: CalibrationSet, method: str, work_dir: str | os.PathLike, *,
              include_conv: bool = True):
    """Tensor ranges for ``method`` over the calibration feeds (one pass, shared by both flavours).

    Only the activation inputs of the GEMMs that will be quantized are observed, which keeps
    the histogram methods (whose threshold search is quadratic in the bin count) fast.
    """
    import onnx
    from onnxruntime.quantization import calibrate as ort_calibrate
    from tqdm import tqdm

    if method not in _CALIBRATORS:
        raise HBAFError(f"unknown calibration method '{method}'; choose {', '.join(METHODS)}")
    if not calib.feeds:
        raise HBAFError("the calibration set is empty; give a manifest with utterances (--manifest)")
    proto = onnx.load(str(prepared))
    wanted = set(activation_tensors(proto, select_gemm_nodes(proto, include_conv)[0]))
    del proto
    cls_name, options = _CALIBRATORS[method]
    cls = getattr(ort_calibrate, cls_name)
    augmented = Path(work_dir) / f"augmented-{method}.onnx"
    kwargs = {"op_types_to_calibrate": list(GEMM_OPS), "augmented_model_path": str(augmented), **options}
    params = inspect.signature(cls.__init__).parameters
    with _quiet():
        calibrator = cls(Path(prepared), **{k: v for k, v in kwargs.items() if k in params})
        select_all = calibrator.select_tensors_to_calibrate

        def select(model):
            found, infos = select_all(model)
            missing = wanted - set(found)
            if missing:
                log.warning("no type information for %d GEMM input(s) (%s); they stay float", len(missing), sorted(missing)[0])
            return set(found) & wanted, infos

        calibrator.select_tensors_to_calibrate = select
        calibrator.augment_graph()
        calibrator.create_inference_session()
    # histogram calibrators stack each batch's outputs, so feed one utterance (one shape) per call
    bar = tqdm(calib.feeds, desc=f"calibrate ({method})", unit="utt", leave=False)
    if method == "minmax":
        with _quiet():
            calibrator.collect_data(_reader(bar))
    else:
        for feed in bar:
            with _quiet():
                calibrator.collect_data(_reader([feed]))
    with _quiet():
        ranges = calibrator.compute_data()
    del calibrator
    with contextlib.suppress(OSError):
        augmented.unlink()
    return ranges


def _quantizer(model, *, per_channel: bool, weight_type, activation_type, ranges, nodes, extra: dict):
    """ONNX Runtime's QDQ quantizer (keyword-matched: its constructor changed across releases)."""
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode

    values = {
        "model": model, "per_channel": per_channel, "reduce_range": False, "mode": QuantizationMode.QLinearOps,
        "static": True, "weight_qType": weight_type, "activation_qType": activation_type, "tensors_range": ranges,
        "nodes_to_quantize": list(nodes), "nodes_to_exclude": [], "op_types_to_quantize": list(GEMM_OPS),
        "extra_options": extra,
    }
    params = inspect.signature(QDQQuantizer.__init__).parameters
    return QDQQuantizer(**{k: v for k, v in values.items() if k in params})


@dataclass
class QuantResult:
    path: str
    flavour: str
    method: str
    quantized_nodes: list[str]
    excluded_nodes: dict[str, str]
    embedding: str
    size_mb: float


def quantize_flavour(prepared: str | os.PathLike, ranges, flavour: str, out_path: str | os.PathLike, *, method: str,
                     calib: CalibrationSet | None, include_conv: bool = True, embedding_int8: bool | None = None,
                     source: str | os.PathLike | None = None) -> QuantResult:
    """Write the ``flavour`` INT8 model for precomputed ``ranges``; checks Q/DQ placement."""
    import onnx
    from onnxruntime.quantization import QuantType

    if flavour not in FLAVOURS:
        raise HBAFError(f"unknown flavour '{flavour}'; choose trt, cpu or both")
    model = onnx.load(str(prepared))  # prepare() stored the inferred types
    meta = onnx_metadata(model)
    if flavour == "cpu":
        # ONNX Runtime's CPU has no Conv kernel taking int8 inputs with a float output: Q/DQ on the
        # Convs would only add a quantize/dequantize round trip in front of the same float Conv
        include_conv = False
    if flavour == "trt" and graph_kind(model) == GRAPH_ORT_CPU:
        raise HBAFError(f"{source or prepared} is the ONNX Runtime CPU graph (com.microsoft operators), which TensorRT cannot "
                        "parse; quantize the contract graph (`hbaf-export onnx` without --graph ort-cpu) for --flavour trt")
    nodes, excluded = select_gemm_nodes(model, include_conv)
    if not nodes:
        raise HBAFError(f"{prepared} has no MatMul/Gemm with constant weights to quantize; export the model with `hbaf-export onnx`")
    extra = {"ActivationSymmetric": flavour == "trt", "WeightSymmetric": True, "QuantizeBias": False,
             "DedicatedQDQPair": False, "AddQDQPairToWeight": False,
             "OpTypesToExcludeOutputQuantization": list(GEMM_OPS)}  # GEMM inputs only; outputs stay float
    act = QuantType.QInt8 if flavour == "trt" else QuantType.QUInt8
    with _quiet():
        quantizer = _quantizer(model, per_channel=True, weight_type=QuantType.QInt8, activation_type=act, ranges=ranges,
                               nodes=nodes, extra=extra)
        quantizer.quantize_model()
    proto = quantizer.model.model
    _keep_float_readers(proto, set(nodes))
    use_emb = (flavour == "cpu") if embedding_int8 is None else embedding_int8
    emb = "float"
    if use_emb:
        emb = _quantize_embedding(proto, int((meta.get("config") or {}).get("vocab_size") or 0), flavour)
    quantizer.model.topological_sort()
    _set_quant_metadata(proto, meta, {
        "flavour": flavour, "method": method, "activation_type": "int8 symmetric" if flavour == "trt" else "uint8",
        "weight_type": "int8 symmetric per-channel", "embedding": emb, "quantized_nodes": len(nodes),
        "calibration": _calib_meta(calib), "source_onnx_sha256": sha256_file(source) if source else None,
        "onnxruntime_version": _ort_version(),
    })
    problems = check_qdq_placement(proto, flavour, set(nodes))
    if problems:
        raise HBAFError(f"INT8 {flavour} model has misplaced Q/DQ ({problems[0]}); this is a quantization bug")
    check_outputs_kept(proto, f"INT8 {flavour} model")
    onnx.checker.check_model(proto)
    out = save_onnx(proto, out_path)
    return QuantResult(str(out), flavour, method, nodes, excluded, emb, out.stat().st_size / 1e6)


def quantize_dynamic_cpu(prepared: str | os.PathLike, out_path: str | os.PathLike, *, source: str | os.PathLike | None = None) -> QuantResult:
    """Dynamic INT8 (weights per-channel int8, activation ranges per call) of the same GEMMs, plus the int8 embedding."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = read_onnx(prepared)
    meta = onnx_metadata(proto)
    nodes, excluded = select_gemm_nodes(proto, include_conv=False)
    with tempfile.TemporaryDirectory(prefix="hbaf-dyn-") as tmp:
        raw = Path(tmp) / "dynamic.onnx"
        with _quiet():
            quantize_dynamic(str(prepared), str(raw), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_quantize=nodes, extra_options={"MatMulConstBOnly": True})
        out_proto = onnx.load(str(raw))
    emb = _quantize_embedding(out_proto, int((meta.get("config") or {}).get("vocab_size") or 0), "cpu")
    _set_quant_metadata(out_proto, meta, {
        "flavour": "cpu-dynamic", "method": "dynamic", "activation_type": "uint8 (range per call)",
        "weight_type": "int8 per-channel", "embedding": emb, "quantized_nodes": len(nodes), "calibration": None,
        "source_onnx_sha256": sha256_file(source) if source else None, "onnxruntime_version": _ort_version(),
    })
    check_outputs_kept(out_proto, "dynamic INT8 model")
    onnx.checker.check_model(out_proto)
    out = save_onnx(out_proto, out_path)
    return QuantResult(str(out), "cpu-dynamic", "dynamic", nodes, excluded, emb, out.stat().st_size / 1e6)


def check_outputs_kept(proto, what: str) -> None:
    """The INT8 graph has every output its metadata lists (the contract's three and the uni-modal
    heads ``audio_probs`` / ``text_probs`` of the FP32 graph), each as a float tensor."""
    spec = spec_from_onnx(proto, source=what)  # a listed output the graph lacks is an error there
    types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    not_float = [n for n in spec.outputs if types.get(n) != 1]  # TensorProto.FLOAT
    if not_float:
        raise HBAFError(f"{what}: outputs {not_float} are not float32; this is a quantization bug")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _calib_meta(calib: CalibrationSet | None) -> dict | None:
    if calib is None:
        return None
    return {"n": calib.n, "dialogues": calib.dialogues, "split": calib.split, "seed": calib.seed,
            "manifest": calib.manifest, "manifest_sha256": calib.manifest_sha256}


def _set_quant_metadata(proto, meta: dict, quant: dict) -> None:
    set_onnx_metadata(proto, meta)
    set_onnx_metadata(proto, quant, key=QUANT_METADATA_KEY)


def _keep_float_readers(proto, quantized: set[str]) -> int:
    """Point every reader of an activation's DequantizeLinear that is not a chosen GEMM back at
    the float tensor, then drop Q/DQ pairs nobody reads. Returns the number of rewired inputs."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    rewired = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight's DQ (constant int8 input)
        if dq.output[0] in outputs:
            raise HBAFError("a graph output became a dequantized tensor; this is a quantization bug")
        for node in graph.node:
            if node is dq or node.name in quantized:
                continue
            for i, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[i] = q.input[0]
                    rewired += 1
    _prune(proto)
    return rewired


def _prune(proto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {name for n in graph.node for name in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _quantize_embedding(proto, vocab_size: int, flavour: str) -> str:
    """Per-row symmetric int8 word-embedding table (weight-only).

    cpu: Gather the int8 rows, Cast, multiply by the gathered row scales (only L rows are
    dequantized per call). trt: DequantizeLinear(axis 0) on the constant table feeding the
    Gather (the form TensorRT's parser accepts for constant int8 weights)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    target = None
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table = inits[node.input[0]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis == 0 and len(table.dims) == 2 and table.data_type == TensorProto.FLOAT and (not vocab_size or table.dims[0] == vocab_size):
            if target is None or table.dims[0] > inits[target.input[0]].dims[0]:
                target = node
    if target is None:
        log.warning("no word-embedding Gather found; the embedding table stays float")
        return "float"
    name = target.input[0]
    weight = numpy_helper.to_array(inits[name]).astype(np.float32)
    scale = np.abs(weight).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    graph.initializer.remove(inits[name])
    graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")])
    ids = target.input[1]
    out = target.output[0]
    index = list(graph.node).index(target)
    graph.node.remove(target)
    if flavour == "trt":
        graph.initializer.append(numpy_helper.from_array(np.zeros(q.shape[0], np.int8), f"{name}_zero_point"))
        new = [
            helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"], [f"{name}_dq"],
                             name=f"{name}_DequantizeLinear", axis=0),
            helper.make_node("Gather", [f"{name}_dq", ids], [out], name=target.name, axis=0),
        ]
    else:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{name}_last_axis"))
        new = [
            helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=target.name, axis=0),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_f32"], name=f"{target.name}_cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_rowscale"], name=f"{target.name}_scale", axis=0),
            helper.make_node("Unsqueeze", [f"{out}_rowscale", f"{name}_last_axis"], [f"{out}_rowscale3"], name=f"{target.name}_unsqueeze"),
            helper.make_node("Mul", [f"{out}_f32", f"{out}_rowscale3"], [out], name=f"{target.name}_dequant"),
        ]
    for offset, node in enumerate(new):
        graph.node.insert(index + offset, node)
    return "int8 per-row (weight-only)"


def check_qdq_placement(model, flavour: str | None = None, quantized: set[str] | None = None) -> list[str]:
    """Problems with where Q/DQ sit: a dequantized activation read by anything but a GEMM,
    Q/DQ next to Softmax/LayerNorm/GELU/residual Adds, and (trt) non-zero or non-int8 zero points."""
    from onnx import TensorProto, numpy_helper

    proto = read_onnx(model) if not hasattr(model, "graph") else model
    graph = proto.graph
    users = consumers(graph)
    inits = {i.name: i for i in graph.initializer}
    problems: list[str] = []
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if quantized is not None and node.name in quantized:
            plain = [i for i in node.input[:2] if producer.get(i) is None or producer[i].op_type != "DequantizeLinear"]
            if plain:
                problems.append(f"{node.op_type} '{node.name}' was chosen for INT8 but reads float {plain[0]}")
        if node.op_type == "DequantizeLinear":
            for reader in users.get(node.output[0], []):
                if reader.op_type not in ALLOWED_DQ_READERS:
                    problems.append(f"DequantizeLinear '{node.name}' feeds {reader.op_type} '{reader.name}' (must stay float)")
                elif quantized is not None and reader.op_type in GEMM_OPS and reader.name not in quantized:
                    problems.append(f"DequantizeLinear '{node.name}' feeds {reader.op_type} '{reader.name}', which was not chosen for INT8")
        if flavour == "trt" and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(node.input) < 3 or node.input[2] not in inits:
                problems.append(f"{node.op_type} '{node.name}' has no constant zero point (TensorRT needs int8 zero point 0)")
                continue
            zp = inits[node.input[2]]
            if zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{node.op_type} '{node.name}' zero point is not int8 0 (TensorRT needs symmetric int8)")
    return problems


# ----------------------------------------------------------------------------- files


def _quiet():
    """ONNX Runtime's quantization tools print progress per call (and log through the root
    logger); keep it in the debug log."""
    return quiet_output(("",), "onnxruntime.quantization", tail=2000)


def work_dir(base: str | os.PathLike):
    """A scratch folder next to the outputs (same disk), removed afterwards."""
    Path(base).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".hbaf-int8-", dir=str(base))


def int8_name(fp32: str | os.PathLike, flavour: str, method: str | None = None) -> str:
    """``<stem>.int8-<flavour>[-method].onnx``; the CPU graph ``model.ort.onnx`` gives ``model.int8-cpu.onnx``."""
    stem = Path(fp32).stem.removesuffix(".ort")
    return f"{stem}.int8-{flavour}{'-' + method if method else ''}.onnx"


def copy_tokenizer_next_to(fp32: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    src = Path(fp32).with_name(TOKENIZER_FILE)
    dst = Path(out_dir) / TOKENIZER_FILE
    if src.is_file() and src.resolve() != dst.resolve() and not dst.exists():
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
