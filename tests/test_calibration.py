"""INT8 calibration: both flavours valid, Q/DQ only on GEMM inputs, agreement with FP32, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from helpers import assert_one_line_error
from test_export_onnx import LABELS, LINES, make_checkpoint, make_manifest


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    import torch

    from export.onnx_export import export_onnx

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calib")
    ckpt = make_checkpoint(root / "ckpt")
    manifest = make_manifest(root / "data")
    return export_onnx(ckpt, root / "fp32" / "model.onnx"), manifest, root


@pytest.fixture(scope="module")
def quantized(fp32):
    from calibration.report import quantize_onnx

    path, manifest, root = fp32
    results = quantize_onnx(path, manifest, root / "int8", flavours=("trt", "cpu"), method="minmax", num=16, threads=1, workers=1)
    return {r.flavour: r for r in results}


def _graph(path):
    model = onnx.load(str(path))
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    return model, readers, producers, inits


def test_both_flavours_are_valid_and_qdq_sits_only_on_gemm_inputs(fp32, quantized):
    fp32_size = os.path.getsize(fp32[0])
    for flavour, res in quantized.items():
        model, readers, producers, inits = _graph(res.path)
        onnx.checker.check_model(model, full_check=True)
        ort.InferenceSession(res.path, providers=["CPUExecutionProvider"])
        # the INT8 graph keeps every output, the uni-modal heads included
        assert [o.name for o in model.graph.output] == ["probs", "utt_emb", "gate", "audio_probs", "text_probs"]
        dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert dq and q
        for n in dq:
            kinds = {r.op_type for r in readers.get(n.output[0], [])}
            assert kinds and kinds <= {"MatMul", "Gemm", "Conv", "Gather"}, (n.name, kinds)
        for n in model.graph.node:
            if n.op_type in ("Softmax", "LayerNormalization", "Erf", "Add", "Sigmoid", "Concat"):
                assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input), n.name
        quantized_gemms = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                           and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)]
        assert len(quantized_gemms) >= 20
        # the gate Linear (its output goes through the bias Add into Sigmoid) stays float
        for n in model.graph.node:
            if n.op_type == "Sigmoid":
                src = producers[n.input[0]]
                src = producers.get(src.input[0], src) if src.op_type == "Add" else src
                assert not any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in src.input)
        # activations: trt symmetric int8 (zero point 0), cpu uint8
        act_zp = [inits[n.input[2]] for n in q]
        if flavour == "trt":
            for n in q + dq:
                zp = inits[n.input[2]]
                assert zp.data_type == onnx.TensorProto.INT8 and not np.any(onnx.numpy_helper.to_array(zp))
            trt_compat = pytest.importorskip("export.trt_compat")
            assert trt_compat.check_onnx_for_tensorrt(res.path) == []
            from export.engine import EngineBuilder

            _, info = EngineBuilder(res.path, "int8").inspect()  # the engine builder takes it (a contract graph)
            assert info["quantized"] and list(info["spec"].labels) == LABELS
        else:
            assert all(z.data_type == onnx.TensorProto.UINT8 for z in act_zp)
            table = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.dims[:1] == [30522]]
            assert table, "word-embedding table is not int8"
            assert os.path.getsize(res.path) < fp32_size / 3.5
        meta = {p.key: json.loads(p.value) for p in model.metadata_props if p.key.startswith("hbaf")}
        assert meta["hbaf"]["labels"] == LABELS
        assert meta["hbaf_quantization"]["flavour"] == flavour and meta["hbaf_quantization"]["calibration"]["n"] == 5


def test_int8_agrees_with_fp32_on_real_utterances(fp32, quantized):
    from calibration.data import build_eval_set, evaluate_onnx, open_fp32
    from calibration.report import agreement

    path, manifest, _ = fp32
    data = build_eval_set(open_fp32(path, threads=1), manifest, workers=1)
    assert len(data) == sum(1 for ln in LINES if ln[2] == "test")
    ref = evaluate_onnx(path, data, threads=1)
    for res in quantized.values():
        got = evaluate_onnx(res.path, data, threads=1)
        a = agreement(ref["probs"], got["probs"])
        assert a["top1_agreement"] >= 0.5 and a["max_abs_prob_diff"] < 0.05, (res.flavour, a)
        # an untrained model has near-ties; wherever FP32's top-1 leads by more than twice the
        # INT8 error, INT8 must pick the same class
        top2 = np.sort(ref["probs"], axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * a["max_abs_prob_diff"]
        assert clear.sum() >= 2, "too few clear-cut utterances to compare"
        assert (ref["probs"].argmax(1)[clear] == got["probs"].argmax(1)[clear]).all(), res.flavour
        assert np.allclose(got["probs"].sum(1), 1.0, atol=1e-4)


def test_placement_check_flags_a_dq_feeding_softmax(quantized):
    from calibration.quantize import check_qdq_placement

    model = onnx.load(quantized["cpu"].path)
    assert check_qdq_placement(model, "cpu") == []
    act_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and any(p.op_type == "QuantizeLinear" and p.output[0] == n.input[0] for p in model.graph.node))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.input[0] = act_dq.output[0]
    problems = check_qdq_placement(model, "cpu")
    assert any("Softmax" in p for p in problems)
    assert check_qdq_placement(onnx.load(quantized["cpu"].path), "trt")  # uint8 zero points are not TensorRT's


def test_compare_calibration_prints_one_table(fp32, tmp_path):
    from calibration.report import compare_calibration

    path, manifest, _ = fp32
    report = compare_calibration(path, manifest, tmp_path, num=3, threads=1, workers=1, latency_runs=2)
    rows = report["rows"]
    assert set(rows) == {"fp32", "dynamic/cpu"} | {f"{m}/{f}" for m in ("minmax", "entropy", "percentile") for f in ("trt", "cpu")}
    for name, r in rows.items():
        assert 0.0 <= r["weighted_f1"] <= 1.0 and r["p50_ms"] > 0 and r["size_mb"] > 0
    header = report["table"].splitlines()[0]
    for col in ("method", "flavour", "weighted F1", "top-1 agreement", "max prob diff", "size MB", "p50 ms"):
        assert col in header
    assert len(report["table"].splitlines()) == 2 + len(rows)
    assert (tmp_path / "calibration_comparison.json").exists() and (tmp_path / "calibration_comparison.md").exists()
    assert (tmp_path / "tokenizer.json").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parents[1]))


def test_cli_empty_calibration_manifest(fp32, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    proc = _cli("int8", "--onnx", str(fp32[0]), "--manifest", str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "empty")
    assert not list((tmp_path / "o").glob("*.onnx")) if (tmp_path / "o").exists() else True


def test_cli_corrupt_and_truncated_onnx(fp32, tmp_path):
    path, manifest, _ = fp32
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(_cli("int8", "--onnx", str(junk), "--manifest", str(manifest), "--out", str(tmp_path / "o")), str(junk))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(Path(path).read_bytes()[: os.path.getsize(path) // 2])
    assert_one_line_error(_cli("compare-calibration", "--onnx", str(cut), "--manifest", str(manifest), "--out", str(tmp_path / "o")), str(cut))
    assert_one_line_error(_cli("int8", "--onnx", str(tmp_path / "missing.onnx"), "--manifest", str(manifest), "--out", str(tmp_path / "o")),
                    "not found")


def test_trt_flavour_with_int8_embedding_table(fp32, tmp_path):
    from calibration.data import build_eval_set, evaluate_onnx, open_fp32
    from calibration.report import agreement, quantize_onnx

    path, manifest, _ = fp32
    (res,) = quantize_onnx(path, manifest, tmp_path, flavours=("trt",), method="minmax", num=16, threads=1, workers=1,
                           trt_int8_embedding=True)
    model, readers, producers, inits = _graph(res.path)
    tables = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2 and i.dims[0] == 30522]
    assert len(tables) == 1 and res.embedding.startswith("int8")
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == tables[0].name]
    assert len(dq) == 1 and {r.op_type for r in readers[dq[0].output[0]]} == {"Gather"}
    assert next(a.i for a in dq[0].attribute if a.name == "axis") == 0
    assert os.path.getsize(res.path) < os.path.getsize(path) / 3.5
    trt_compat = pytest.importorskip("export.trt_compat")
    assert trt_compat.check_onnx_for_tensorrt(res.path) == []
    data = build_eval_set(open_fp32(path, threads=1), manifest, workers=1)
    a = agreement(evaluate_onnx(path, data, threads=1)["probs"], evaluate_onnx(res.path, data, threads=1)["probs"])
    assert a["max_abs_prob_diff"] < 0.05, a


def test_calibration_memory_is_the_fp32_models_own_on_the_offline_path(fp32, quantized):
    from calibration.data import build_calibration_set, open_fp32
    from edge_runtime.offline import run_dialogues
    from hbaf.data.manifest import load_manifest
    from hbaf.data.store import FeatureStore, group_dialogues
    from hbaf.errors import HBAFError

    path, manifest, _ = fp32
    backend = open_fp32(path, threads=1)
    calib = build_calibration_set(backend, manifest, num=16, seed=0, workers=1)
    train = [r for r in load_manifest(manifest) if r.split == "train"]
    assert calib.n == len(train) == 5 and calib.split == "train" and calib.dialogues == 2
    # replay the same utterances: each feed carries the memory the FP32 model produced for it
    by_text = {f["input_ids"].tobytes(): f for f in calib.feeds}
    tok = backend.tokenizer()
    seen = run_dialogues(backend, tok, group_dialogues(train), FeatureStore(train), [r.text for r in train])
    for i, r in enumerate(train):
        feed = by_text[tok([r.text])[0].tobytes()]
        np.testing.assert_array_equal(feed["memory"][0], seen["memory"][i])
        np.testing.assert_array_equal(feed["memory_mask"][0], seen["memory_mask"][i])
    assert sorted(int(f["memory_mask"].sum()) for f in calib.feeds) == [0, 0, 1, 1, 2]
    with pytest.raises(HBAFError, match="already quantized"):
        open_fp32(quantized["trt"].path)


def test_tokenizer_override_and_latency_keys(fp32, tmp_path):
    from calibration.data import build_eval_set, model_tokenizer, open_fp32
    from calibration.report import latency_feeds, measure_latency
    from hbaf.errors import HBAFError

    path, manifest, root = fp32
    backend = open_fp32(path, threads=1)
    assert model_tokenizer(backend).file == Path(path).with_name("tokenizer.json")
    override = model_tokenizer(backend, root / "ckpt" / "tokenizer.json")
    assert override.file == root / "ckpt" / "tokenizer.json" and override.max_tokens == backend.max_tokens
    with pytest.raises(HBAFError, match="tokenizer file not found"):
        model_tokenizer(backend, tmp_path / "none.json")
    data = build_eval_set(backend, manifest, workers=1, tokenizer=root / "ckpt" / "tokenizer.json")
    assert data.tokenizer.file == root / "ckpt" / "tokenizer.json"
    ref = {"memory": np.zeros((len(data), 4, 64), np.float32), "utt_emb": np.ones((len(data), 64), np.float32)}
    feeds, utt = latency_feeds(backend, data, ref, seconds=1.2)
    assert feeds["audio_feats"].shape == (1, utt["frames"], 384) and utt["memory_slots"] == 4 and utt["frames"] <= 60
    assert feeds["memory_mask"].sum() == 4
    lat = measure_latency({"fp32": backend}, feeds, warmup=1, runs=3)
    assert set(lat["fp32"]) == {"p50_ms", "p90_ms", "min_ms", "mean_ms", "runs"} and lat["fp32"]["runs"] == 3
