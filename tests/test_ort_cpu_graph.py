"""The ONNX Runtime CPU graph (export/ort_cpu.py): fused attention, parity with PyTorch on real
speech, its CPU INT8 model, and refusal wherever TensorRT would be handed it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from helpers import assert_one_line_error
from test_export_onnx import LABELS, LINES, make_checkpoint, make_manifest


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import torch

    from export.onnx_export import export_onnx

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ortcpu")
    ckpt = make_checkpoint(root / "ckpt")
    manifest = make_manifest(root / "data")
    contract = export_onnx(ckpt, root / "out" / "model.onnx")
    cpu = export_onnx(ckpt, root / "out" / "model.ort.onnx", graph="ort-cpu")
    return ckpt, manifest, contract, cpu


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def test_attention_is_fused_and_the_graph_is_smaller(graphs):
    from hbaf.checkpoint import load_checkpoint
    from hbaf.model import MultiHeadAttention

    ckpt, _, contract, cpu = graphs
    model, _ = load_checkpoint(ckpt)
    blocks = sum(isinstance(m, MultiHeadAttention) for m in model.modules())
    ops, base = _ops(cpu), _ops(contract)
    assert ops.get("MultiHeadAttention") == blocks
    assert ops.get("Softmax", 0) == 3  # only the classifiers' (fused, voice, words); every attention Softmax is inside the fused node
    assert ops.get("Transpose", 0) <= 2 and sum(ops.values()) < 0.6 * sum(base.values()), (ops, base)
    proto = onnx.load(str(cpu))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["hbaf"])
    assert meta["graph"] == "ort-cpu" and meta["labels"] == LABELS
    assert [i.name for i in proto.graph.input] == [i.name for i in onnx.load(str(contract)).graph.input]
    # every projection GEMM reads an initializer (packed Q/K/V weights folded), so INT8 can quantize it
    inits = {i.name for i in proto.graph.initializer}
    gemms = [n for n in proto.graph.node if n.op_type == "MatMul"]
    assert gemms and all(n.input[1] in inits for n in gemms)


def test_fused_copy_swaps_modules_on_a_copy_only(graphs):
    import torch

    from export.ort_cpu import FusedAttention, fused_copy
    from hbaf.checkpoint import load_checkpoint
    from hbaf.model import MultiHeadAttention

    forward = MultiHeadAttention.forward
    model, _ = load_checkpoint(graphs[0])
    fused = fused_copy(model)
    assert MultiHeadAttention.forward is forward  # nothing global was patched
    n_blocks = sum(isinstance(m, MultiHeadAttention) for m in model.modules())
    assert n_blocks and sum(isinstance(m, FusedAttention) for m in fused.modules()) == n_blocks
    assert not any(isinstance(m, MultiHeadAttention) for m in fused.modules())
    assert not any(isinstance(m, FusedAttention) for m in model.modules())
    assert list(dict(fused.named_parameters())) == list(dict(model.named_parameters()))  # same names: same initializers
    g = torch.Generator().manual_seed(0)
    feeds = (torch.randn(2, 97, 384, generator=g), torch.ones(2, 97), torch.randint(1000, 2000, (2, 9), generator=g).int(),
             torch.ones(2, 9, dtype=torch.int32), torch.randn(2, 4, 64, generator=g), torch.ones(2, 4))
    feeds[1][1, 60:] = 0
    feeds[3][1, 5:] = 0
    with torch.no_grad():
        for want, got in zip(model(*feeds), fused(*feeds)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_parity_with_pytorch_on_real_speech_batch1_and_padded_batch3(graphs):
    from export.parity import parity

    ckpt, manifest, _, cpu = graphs
    res = parity(ckpt, cpu, manifest, n=len(LINES), batch=3, threads=1)
    assert res["sequential_max_abs_prob_diff"] < 1e-4 and res["sequential_top1_agreement"] == 1.0
    assert res["batched_max_abs_prob_diff_vs_torch"] < 1e-4  # padded keys are masked like the model masks them
    assert res["batched_vs_batch1_max_abs_prob_diff"] < 1e-4


def test_cpu_int8_from_the_cpu_graph(graphs, tmp_path):
    from calibration.data import build_eval_set, evaluate_onnx, open_fp32
    from calibration.report import agreement, quantize_onnx

    _, manifest, contract, cpu = graphs
    (res,) = quantize_onnx(cpu, manifest, tmp_path, flavours=["cpu"], method="minmax", num=16, threads=1, workers=1)
    assert res.path.endswith("model.int8-cpu.onnx")
    model = onnx.load(res.path)
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            assert {r.op_type for r in readers[n.output[0]]} <= {"MatMul", "Gemm", "Gather"}, n.name  # Convs stay float
    assert sum(n.op_type == "MultiHeadAttention" for n in model.graph.node) >= 1
    data = build_eval_set(open_fp32(contract, threads=1), manifest, workers=1)
    ref = evaluate_onnx(contract, data, threads=1)
    got = evaluate_onnx(res.path, data, threads=1)
    a = agreement(ref["probs"], got["probs"])
    assert a["max_abs_prob_diff"] < 0.05, a
    top2 = np.sort(ref["probs"], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * a["max_abs_prob_diff"]
    assert clear.sum() >= 2 and (ref["probs"].argmax(1)[clear] == got["probs"].argmax(1)[clear]).all()


def test_tensorrt_paths_refuse_the_cpu_graph(graphs, tmp_path):
    from calibration.report import quantize_onnx
    from hbaf.errors import HBAFError

    _, manifest, _, cpu = graphs
    with pytest.raises(HBAFError, match="TensorRT cannot parse"):
        quantize_onnx(cpu, manifest, tmp_path, flavours=["trt"], method="minmax", num=4, threads=1, workers=1)
    trt_compat = pytest.importorskip("export.trt_compat")
    assert any("com.microsoft" in p for p in trt_compat.check_onnx_for_tensorrt(cpu))
    from export.engine import EngineBuilder

    with pytest.raises(HBAFError, match="ONNX Runtime CPU graph"):
        EngineBuilder(cpu, precision="fp16").inspect()


def test_cli_cpu_graph_needs_the_dynamo_exporter(graphs, tmp_path):
    ckpt = graphs[0]
    proc = subprocess.run([sys.executable, "-m", "export.cli", "onnx", "--checkpoint", str(ckpt), "--out",
                           str(tmp_path / "m.onnx"), "--graph", "ort-cpu", "--exporter", "torchscript"],
                          capture_output=True, text=True)
    assert_one_line_error(proc, "torch.export-based exporter")
