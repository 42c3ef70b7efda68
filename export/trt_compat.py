"""Check an ONNX file against what TensorRT 10's ONNX parser accepts, before a device build.

Building an engine happens on the Jetson and takes minutes; this check runs anywhere in
well under a second and names every problem at once: opset range, operators the parser
does not implement, integer tensors feeding float-only layers, the I/O contract of
hbaf/contract.py (``INPUTS``/``OUTPUTS``: names, dtypes, dynamic B/T/L, fixed K/D/F/C that
agree across tensors; F is the model's feature width) and Q/DQ nodes that TensorRT cannot use
(it needs symmetric INT8: zero point 0 of type int8).

``check_onnx_for_tensorrt`` (the fusion model: the graph checks plus its I/O contract) and
``check_graph_for_tensorrt`` (any graph, e.g. the recogniser's encoder and decoder: no tensor
names assumed) return a list of one-line problems (empty = OK) and raise ``HBAFError`` only
when the file is not an ONNX model at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from hbaf.contract import (
    DYNAMIC_AXES,
    HEAD_OUTPUTS,
    INPUTS,
    OUTPUTS,
    TensorSpec,
    first_line,
    read_onnx,
)

log = logging.getLogger(__name__)

ModelLike = str | os.PathLike | onnx.ModelProto

# TensorRT 10 parses opsets 9..20; per-channel Q/DQ (axis attribute) needs opset >= 13.
MIN_OPSET = 13
MAX_OPSET = 20

# Operators the TensorRT 10 ONNX parser implements (onnx-tensorrt docs/operators.md,
# "Supported = Y" rows). Anything else fails to parse without a custom plugin.
TRT10_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
    MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
    Unsqueeze Upsample Where Xor
    """.split()
)

# Layers TensorRT runs in floating point only (INT8 comes from Q/DQ around them, never from
# integer inputs). An integer tensor reaching one of these is data-path integer arithmetic.
FLOAT_ONLY_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

FIXED_AXES = ("K", "D", "F", "C")  # fixed per model: context slots, memory width, feature width, labels


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _iter_nodes(graph: onnx.GraphProto, functions: dict[tuple[str, str], onnx.FunctionProto]) -> Iterator[onnx.NodeProto]:
    """Every node, descending into If/Loop/Scan bodies and ONNX local functions."""
    seen_functions: set[tuple[str, str]] = set()

    def walk(nodes) -> Iterator[onnx.NodeProto]:
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in seen_functions:
                    seen_functions.add(key)
                    yield from walk(functions[key].node)
                continue
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        yield from walk(sub.node)

    yield from walk(graph.node)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor we can learn (inputs, initializers, inferred value_info)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help here, not a requirement
        log.debug("ONNX shape inference failed; using the model's own value_info", exc_info=True)
        inferred = model
    types: dict[str, int] = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = attr.t.data_type
    return types


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Dims as int (fixed), str (symbolic name) or None (unknown, i.e. dynamic); None if no shape."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _check_io(values: list[onnx.ValueInfoProto], specs: tuple[TensorSpec, ...], kind: str,
              fixed_sizes: dict[str, tuple[int, str]]) -> list[str]:
    """Names, dtypes and axes of the graph's inputs or outputs against the contract. ``fixed_sizes``
    collects the size each fixed axis letter (K, D, F, C) has, to check that all tensors agree."""
    problems: list[str] = []
    by_name = {v.name: v for v in values}
    expected = [s.name for s in specs]
    missing = [n for n in expected if n not in by_name]
    extra = [n for n in by_name if n not in expected]
    if missing:
        problems.append(f"graph {kind}s {missing} are missing (the contract needs {expected})")
    if extra:
        problems.append(f"graph {kind}s {extra} are not part of the contract {expected}")
    fixed: dict[str, list[str]] = {}  # dynamic axis letter -> tensors that fix it
    for spec in specs:
        vi = by_name.get(spec.name)
        if vi is None:
            continue
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if elem != spec.onnx_type():
            hint = "; int64 I/O costs TensorRT casts: export token tensors as int32" if elem == TensorProto.INT64 else ""
            problems.append(f"{kind} '{spec.name}' is {_dtype_name(elem)}, the contract needs {spec.dtype}{hint}")
        dims = _dims(vi)
        if dims is None:
            problems.append(f"{kind} '{spec.name}' has no shape; export with explicit shapes and dynamic axes")
            continue
        if len(dims) != len(spec.axes):
            problems.append(f"{kind} '{spec.name}' has rank {len(dims)}, the contract needs {len(spec.axes)} {list(spec.axes)}")
            continue
        for i, (axis, dim) in enumerate(zip(spec.axes, dims)):
            where = f"{spec.name}[{i}]"
            if axis in DYNAMIC_AXES:
                if isinstance(dim, int):
                    fixed.setdefault(f"{axis} (fixed to {dim})", []).append(where)
            elif axis in FIXED_AXES:
                if not (isinstance(dim, int) and dim > 0):
                    problems.append(f"{kind} '{spec.name}' axis {i} ({axis}) must be a fixed size, got {dim!r}; "
                                    "export the model again with `hbaf-export onnx`")
                elif axis in fixed_sizes and fixed_sizes[axis][0] != dim:
                    size, first = fixed_sizes[axis]
                    problems.append(f"axis {axis} is {size} in {first} but {dim} in {where}; the graph is inconsistent: export it again")
                else:
                    fixed_sizes.setdefault(axis, (dim, where))
            elif isinstance(dim, int) and dim != axis:
                problems.append(f"{kind} '{spec.name}' axis {i} is {dim}, the contract needs {axis}")
    for axis, where in fixed.items():
        problems.append(f"{kind} axis {axis} in {', '.join(where)} must be dynamic; export it as a dynamic axis")
    return problems


def _check_qdq(node: onnx.NodeProto, types: dict[str, int], constants: dict[str, np.ndarray]) -> list[str]:
    label = f"{node.op_type} '{node.name or node.output[0]}'"
    if len(node.input) < 3 or not node.input[2]:
        if node.op_type == "QuantizeLinear":
            return [f"{label} has no zero point, so ONNX makes it uint8; TensorRT needs symmetric int8: quantize with an int8 zero point of 0 (calibration, TensorRT flavour)"]
        x_type = types.get(node.input[0])
        if x_type not in (None, TensorProto.INT8):
            return [f"{label} dequantizes {_dtype_name(x_type)}; TensorRT needs int8 (calibration, TensorRT flavour)"]
        return []
    zp_name = node.input[2]
    zp_type = types.get(zp_name)
    problems = []
    if zp_type is not None and zp_type != TensorProto.INT8:
        problems.append(f"{label} zero point is {_dtype_name(zp_type)}; TensorRT needs int8 (calibration, TensorRT flavour: symmetric s8)")
    zp = constants.get(zp_name)
    if zp is None:
        problems.append(f"{label} zero point '{zp_name}' is not a constant; TensorRT needs a constant zero point of 0")
    elif np.any(zp != 0):
        problems.append(f"{label} zero point is not 0 (asymmetric); TensorRT needs symmetric quantization: recalibrate with the TensorRT flavour (symmetric s8)")
    return problems


def check_onnx_for_tensorrt(path_or_model: ModelLike) -> list[str]:
    """Return every reason TensorRT 10 would reject this HBAF fusion model or break its I/O contract ([] = OK)."""
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else read_onnx(path_or_model, check_io=False)
    problems = check_graph_for_tensorrt(model, path_or_model)
    fixed_sizes: dict[str, tuple[int, str]] = {}
    problems.extend(_check_io(list(model.graph.input), INPUTS, "input", fixed_sizes))
    present = {o.name for o in model.graph.output}
    outputs = OUTPUTS + tuple(s for s in HEAD_OUTPUTS if s.name in present)  # the uni-modal heads are optional
    problems.extend(_check_io(list(model.graph.output), outputs, "output", fixed_sizes))
    return problems


def check_graph_for_tensorrt(path_or_model: ModelLike, source: ModelLike | None = None) -> list[str]:
    """Return every reason TensorRT 10 would reject any graph ([] = OK): onnx.checker, opset, operators,
    integer inputs to float-only layers, Q/DQ form. Names no tensor: the I/O of a particular graph is
    its caller's to check (``check_onnx_for_tensorrt`` for the fusion model)."""
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else read_onnx(path_or_model, check_io=False)
    path_or_model = source if source is not None else path_or_model
    problems: list[str] = []

    try:
        if isinstance(path_or_model, onnx.ModelProto):
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(path_or_model))  # path form also handles >2 GB models
    except Exception as err:
        problems.append(f"onnx.checker: {first_line(err, 1000)}")

    opset = default_opset(model)
    if opset is None:
        problems.append("the model imports no default ONNX opset")
    elif not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset} is outside {MIN_OPSET}..{MAX_OPSET} that TensorRT 10 parses; export with opset 17")

    functions = {(f.domain, f.name): f for f in model.functions}
    types = _tensor_types(model)
    constants = _constants(model)
    unsupported: dict[str, int] = {}
    for node in _iter_nodes(model.graph, functions):
        if node.domain not in DEFAULT_DOMAINS:
            key = f"{node.domain}::{node.op_type}"
            unsupported[key] = unsupported.get(key, 0) + 1
            continue
        if node.op_type not in TRT10_SUPPORTED_OPS:
            unsupported[node.op_type] = unsupported.get(node.op_type, 0) + 1
            continue
        if node.op_type in FLOAT_ONLY_OPS:
            integer = [n for n in node.input if types.get(n) in (TensorProto.INT64, TensorProto.INT32)]
            if integer:
                kinds = "/".join(sorted({_dtype_name(types[n]) for n in integer}))
                problems.append(
                    f"{node.op_type} '{node.name or node.output[0]}' has {kinds} inputs {integer}; "
                    "TensorRT runs it in float only: cast to float before it (integer maths belongs to shape computation)"
                )
        if node.op_type in QDQ_OPS:
            problems.extend(_check_qdq(node, types, constants))
    for op, count in sorted(unsupported.items()):
        problems.append(f"operator {op} ({count} node{'s' if count > 1 else ''}) is not supported by the TensorRT 10 ONNX parser; rewrite it with supported ops")
    return problems

