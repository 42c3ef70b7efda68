"""The recogniser's ONNX Runtime sessions sleep between runs instead of spinning: they run one
after another on the same cores, and a spinning session's threads slow the next one down
(edge_runtime/recogniser.py, ``ort_session``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_runtime.recogniser import OrtGraph, ort_session

SPIN = "session.intra_op.allow_spinning"


def _graph(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_recogniser_sessions_do_not_spin(tmp_path):
    path = _graph(tmp_path / "g.onnx")
    session = ort_session(path, threads=2)
    assert session.get_session_options().get_session_config_entry(SPIN) == "0"
    graph = OrtGraph(path, threads=2)  # the decoder's two graphs
    assert graph.session.get_session_options().get_session_config_entry(SPIN) == "0"
    out = graph.run({"x": np.array([[-1, 2, -3], [4, -5, 6]], dtype=np.float32)})
    assert out["y"].tolist() == [[0, 2, 0], [4, 0, 6]]
