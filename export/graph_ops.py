"""Small ONNX graph rewrites of the exporter and the ONNX Runtime CPU graph (what calibration
shares with them, ``consumers`` and ``add_contrib_types``, is in ``hbaf.onnx_graph``).

Each function edits a ``ModelProto`` in place and returns how much it changed; none of them
changes what the graph computes.
"""

from __future__ import annotations

import logging

import numpy as np

from hbaf.contract import (
    ALL_OUTPUTS,
    DYNAMIC_AXES,
    INPUTS,
    ModelSpec,
    first_line,
)
from hbaf.errors import HBAFError
from hbaf.onnx_graph import consumers

log = logging.getLogger(__name__)

# opset 18 moved `axes` of these reductions from an attribute to an input and added
# `noop_with_empty_axes`; ReduceSum already had both since opset 13.
_REDUCE_ATTR_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})


def drop_index_casts(proto) -> int:
    """Feed int32 ``input_ids`` straight into Gather: remove Cast(int32 -> int64) nodes whose
    only users are Gather index inputs (or Shape). Returns how many were removed."""
    from onnx import TensorProto

    graph = proto.graph
    int32_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.INT32}
    users = consumers(graph)
    outputs = {o.name for o in graph.output}
    removed = []
    for node in graph.node:
        if node.op_type != "Cast" or node.input[0] not in int32_inputs:
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        uses = users.get(node.output[0], [])
        if to != TensorProto.INT64 or not uses or node.output[0] in outputs:
            continue
        index_only = all((u.op_type == "Gather" and list(u.input).index(node.output[0]) == 1 and u.input[0] != node.output[0])
                         or u.op_type == "Shape" for u in uses)
        if index_only:
            for u in uses:
                for i, name in enumerate(u.input):
                    if name == node.output[0]:
                        u.input[i] = node.input[0]
            removed.append(node)
    for node in removed:
        graph.node.remove(node)
    if removed:
        log.debug("removed %d int32->int64 Cast(s) in front of Gather", len(removed))
    return len(removed)


def convert_opset(proto, opset: int) -> None:
    """Convert the default-domain opset to ``opset`` (the exporter builds 18)."""
    import onnx
    import onnx.version_converter

    current = next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), None)
    if current == opset:
        return
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
    except Exception as err:
        raise HBAFError(f"cannot convert the exported graph from opset {current} to {opset} ({first_line(err)}); "
                        f"pass --opset {current}") from err
    if opset < 18:
        for node in converted.graph.node:
            if node.op_type in _REDUCE_ATTR_OPS:
                keep = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
                if len(keep) != len(node.attribute):
                    if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
                        raise HBAFError(f"{node.op_type} with noop_with_empty_axes=1 has no opset {opset} form; pass --opset 18")
                    del node.attribute[:]
                    node.attribute.extend(keep)
    proto.CopyFrom(converted)


def name_io_dims(proto, spec: ModelSpec) -> None:
    """Force the contract's shapes on the graph I/O (symbolic batch/frames/tokens, the model's
    fixed K, D, F and C) and use the same symbol names inside the graph."""
    sizes = {"K": spec.context_size, "D": spec.memory_dim, "F": spec.feature_dim, "C": spec.num_classes}
    axes = {s.name: s.axes for s in INPUTS + ALL_OUTPUTS}
    rename: dict[str, str] = {}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        want = axes[vi.name]
        if len(dims) != len(want):
            raise HBAFError(f"exported {vi.name} has rank {len(dims)}, the contract needs {len(want)}; this is an export bug")
        for dim, axis in zip(dims, want):
            if axis in DYNAMIC_AXES:
                symbol = DYNAMIC_AXES[axis]
                if dim.HasField("dim_param") and dim.dim_param != symbol:
                    rename[dim.dim_param] = symbol
                dim.dim_param = symbol
            else:
                dim.dim_value = sizes[axis] if isinstance(axis, str) else axis
    if rename:
        for vi in proto.graph.value_info:
            for dim in vi.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in rename:
                    dim.dim_param = rename[dim.dim_param]


def fold_weight_packing(proto) -> int:
    """Fold the Concat/Transpose chains that pack projection weights into plain initializers (the
    quantizer only quantizes a GEMM whose weight is an initializer). Returns the nodes removed."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    removed = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            if node.op_type not in ("Concat", "Transpose") or not all(n in inits for n in node.input):
                continue
            arrays = [numpy_helper.to_array(inits[n]) for n in node.input]
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "Concat":
                value = np.concatenate(arrays, axis=int(attrs["axis"].i))
            else:
                perm = list(attrs["perm"].ints) if "perm" in attrs else None
                value = np.transpose(arrays[0], perm)
            tensor = numpy_helper.from_array(np.ascontiguousarray(value), node.output[0])
            graph.initializer.append(tensor)
            inits[tensor.name] = tensor
            graph.node.remove(node)
            removed += 1
            changed = True
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return removed
