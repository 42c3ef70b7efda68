"""Reading and typing an ONNX graph of the model: who reads a tensor, and the element types
ONNX shape inference leaves out.

Shared by the exporter (``export.graph_ops``, ``export.onnx_export``) and INT8 calibration
(``calibration.quantize``), which sit on different layers and both edit the exported graph.
Neither function changes what the graph computes.
"""

from __future__ import annotations

from hbaf.contract import MS_DOMAIN


def consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def add_contrib_types(proto) -> int:
    """ONNX shape inference cannot type contrib (com.microsoft) outputs; the quantizer needs every
    GEMM input's element type, so declare them float. Returns how many were added."""
    from onnx import TensorProto, helper

    known = {v.name for v in proto.graph.value_info} | {o.name for o in proto.graph.output}
    added = 0
    for node in proto.graph.node:
        if node.domain != MS_DOMAIN:
            continue
        for name in node.output:
            if name and name not in known:
                proto.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                known.add(name)
                added += 1
    return added
