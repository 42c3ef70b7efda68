"""Engine export and TensorRT backend: everything checkable without a GPU, plus GPU tests that skip cleanly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.cli import main as export_main
from export.engine import EngineBuilder
from export.trt_compat import check_graph_for_tensorrt, check_onnx_for_tensorrt
from hbaf.contract import (
    Dims,
    batch_feeds,
    pad_feeds,
    ModelSpec,
    Profiles,
    ShapeProfile,
    Sidecar,
    check_engine_compat,
    engine_name,
    has_qdq,
    memory_input_dims,
    onnx_metadata,
    parse_dims,
    parse_engine_name,
    read_onnx,
    sanitize_gpu_name,
    sidecar_path,
)
from hbaf.errors import HBAFError

REPO = Path(__file__).resolve().parents[1]
K, D, C = 8, 16, 4
LABELS = ["neutral", "joy", "sadness", "anger"]
SPEC = ModelSpec(labels=tuple(LABELS), context_size=K, memory_dim=D, feature_kind="log-mel")  # the toy graphs take 80-d frames

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


needs_trt_gpu = pytest.mark.skipif(not (HAS_TRT and _cuda_available()), reason="needs TensorRT and a CUDA GPU")


# --------------------------------------------------------------------------- tiny contract ONNX


def _vi(name: str, dtype: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, dims)


def make_contract_onnx(
    *,
    ids_dtype: int = TensorProto.INT32,
    opset: int = 17,
    int64_matmul: bool = False,
    unsupported_op: str | None = None,
    qdq_zero_point: int | None = None,
    qdq_zp_dtype: int = TensorProto.INT8,
    static_batch: bool = False,
) -> onnx.ModelProto:
    """A small graph with the exact HBAF I/O contract; variants inject one TensorRT problem each."""
    rng = np.random.default_rng(0)
    b = 1 if static_batch else "B"
    inputs = [
        _vi("audio_feats", TensorProto.FLOAT, [b, "T", 80]),
        _vi("audio_mask", TensorProto.FLOAT, [b, "T"]),
        _vi("input_ids", ids_dtype, [b, "L"]),
        _vi("attention_mask", TensorProto.INT32, [b, "L"]),
        _vi("memory", TensorProto.FLOAT, [b, K, D]),
        _vi("memory_mask", TensorProto.FLOAT, [b, K]),
    ]
    outputs = [
        _vi("probs", TensorProto.FLOAT, [b, C]),
        _vi("utt_emb", TensorProto.FLOAT, [b, D]),
        _vi("gate", TensorProto.FLOAT, [b, 2]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((80, C)).astype(np.float32) * 0.1, "w_cls"),
        numpy_helper.from_array(rng.standard_normal((80, D)).astype(np.float32) * 0.1, "w_emb"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(0.001, dtype=np.float32), "id_scale"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["audio_mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["audio_feats", "mask3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
    ]
    cls_in = "pooled"
    if qdq_zero_point is not None:
        zp = np.array(qdq_zero_point, dtype=helper.tensor_dtype_to_np_dtype(qdq_zp_dtype))
        inits += [numpy_helper.from_array(np.array(0.02, dtype=np.float32), "q_scale"), numpy_helper.from_array(zp, "q_zp")]
        nodes += [
            helper.make_node("QuantizeLinear", ["pooled", "q_scale", "q_zp"], ["pooled_q"]),
            helper.make_node("DequantizeLinear", ["pooled_q", "q_scale", "q_zp"], ["pooled_dq"]),
        ]
        cls_in = "pooled_dq"
    nodes += [
        helper.make_node("MatMul", [cls_in, "w_cls"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("Unsqueeze", ["memory_mask", "axis2"], ["mmask3"]),
        helper.make_node("Mul", ["memory", "mmask3"], ["mem_masked"]),
        helper.make_node("ReduceMean", ["mem_masked"], ["mem_pool"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_emb"], ["emb_a"]),
        helper.make_node("Add", ["emb_a", "mem_pool"], ["utt_emb"]),
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["att_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "att_f"], ["ids_m"]),
        helper.make_node("ReduceMean", ["ids_m"], ["ids_mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["ids_mean", "id_scale"], ["t_gate_in"]),
        helper.make_node("ReduceMean", ["audio_mask"], ["a_gate_in"], axes=[1], keepdims=1),
        helper.make_node("Concat", ["a_gate_in", "t_gate_in"], ["gate_in"], axis=1),
        helper.make_node("Sigmoid", ["gate_in"], ["gate"]),
    ]
    if int64_matmul:
        inits += [numpy_helper.from_array(np.ones((1, 3), dtype=np.int64), "w_int"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
        nodes += [
            helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64),
            helper.make_node("ReduceSum", ["ids64", "axis1"], ["ids_sum"], keepdims=1),
            helper.make_node("MatMul", ["ids_sum", "w_int"], ["ids_proj"]),
        ]
    if unsupported_op:
        nodes.append(helper.make_node(unsupported_op, ["audio_mask"], ["uniq"]))
    graph = helper.make_graph(nodes, "hbaf_tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    helper.set_model_props(model, {"hbaf": json.dumps({**SPEC.to_metadata(), "config": {"d": D}, "version": "0.1.0"})})
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def contract_feeds(b: int = 2, t: int = 50, ln: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "audio_feats": rng.standard_normal((b, t, 80)).astype(np.float32),
        "audio_mask": np.ones((b, t), np.float32),
        "input_ids": rng.integers(100, 3000, (b, ln)).astype(np.int32),
        "attention_mask": np.ones((b, ln), np.int32),
        "memory": rng.standard_normal((b, K, D)).astype(np.float32),
        "memory_mask": np.ones((b, K), np.float32),
    }


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``hbaf-export engine ARGS`` in a fresh process."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "export.cli", "engine", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --------------------------------------------------------------------------- profiles


def test_parse_dims_and_defaults():
    assert parse_dims("1,300,32") == Dims(1, 300, 32)
    assert parse_dims(" 8, 1000 ,128") == Dims(8, 1000, 128)
    p = Profiles()
    assert (p.min, p.opt, p.max) == (Dims(1, 16, 4), Dims(1, 300, 32), Dims(8, 1000, 128))
    assert Profiles.parse("2,20,8", "2,300,32", "4,500,64") == Profiles(Dims(2, 20, 8), Dims(2, 300, 32), Dims(4, 500, 64))


@pytest.mark.parametrize("text", ["1,300", "1,300,32,4", "a,b,c", "1,-3,4", "", "1.5,2,3"])
def test_parse_dims_rejects(text):
    with pytest.raises(HBAFError, match="BATCH,FRAMES,TOKENS"):
        parse_dims(text, "--opt")


def test_profiles_parse_keeps_defaults_for_omitted_corners():
    p = Profiles.parse(max="4,500,64")
    assert p.max == Dims(4, 500, 64) and p.min == Dims(1, 16, 4) and p.opt == Dims(1, 300, 32)


@pytest.mark.parametrize(
    "lo,mid,hi,match",
    [
        ("1,16,4", "1,2000,32", "8,1000,128", "frames: need min <= opt <= max"),
        ("4,16,4", "1,300,32", "8,1000,128", "batch: need min <= opt <= max"),
        ("1,16,64", "1,300,32", "8,1000,128", "tokens: need min <= opt <= max"),
        ("1,16,4", "1,300,32", "8,1001,128", "exceeds 1000"),
        ("1,16,4", "1,300,32", "8,1000,129", "exceeds 128"),
        ("0,16,4", "1,300,32", "8,1000,128", "below 1"),
    ],
)
def test_profiles_validation(lo, mid, hi, match):
    with pytest.raises(HBAFError, match=match):
        Profiles.parse(lo, mid, hi)


def test_profiles_follow_the_model_input_format():
    whisper = ModelSpec(labels=tuple(LABELS), context_size=K, memory_dim=D)  # Whisper states: 50 frames/s
    prof = Profiles.for_spec(whisper)
    assert (prof.min.frames, prof.opt.frames, prof.max.frames) == (8, 150, 500)
    assert Profiles.for_spec(SPEC) == Profiles()  # log-mel: 16 / 300 / 1000
    assert Profiles.for_spec(whisper, opt="1,100,16").opt == (1, 100, 16)
    with pytest.raises(HBAFError, match="exceeds the model's 500"):
        Profiles.for_spec(whisper, max="8,600,128")


def test_profile_input_shapes_cover_all_six_inputs():
    shapes = Profiles().input_shapes(SPEC)
    assert shapes["audio_feats"] == ((1, 16, 80), (1, 300, 80), (8, 1000, 80))
    assert shapes["audio_mask"] == ((1, 16), (1, 300), (8, 1000))
    assert shapes["input_ids"] == shapes["attention_mask"] == ((1, 4), (1, 32), (8, 128))
    assert shapes["memory"] == ((1, K, D), (1, K, D), (8, K, D))
    assert shapes["memory_mask"] == ((1, K), (1, K), (8, K))


# --------------------------------------------------------------------------- naming and sidecar


def test_engine_name_and_gpu_sanitising():
    assert sanitize_gpu_name("NVIDIA-H100-80GB-HBM3") == "nvidia-h100-80gb-hbm3"
    assert sanitize_gpu_name("Orin") == "orin"
    assert sanitize_gpu_name("NVIDIA GeForce RTX 3090 Ti") == "nvidia-geforce-rtx-3090-ti"
    assert sanitize_gpu_name("  Tesla T4 (PCIe) ") == "tesla-t4-pcie"
    name = engine_name("student", "10.3.0.30", "Orin", "int8")
    assert name == "student.10.3.0.30.orin.int8.engine"
    assert parse_engine_name(name) == {"model": "student", "trt": "10.3.0.30", "gpu": "orin", "precision": "int8"}
    assert engine_name("my student.v2", "10.3.0", "NVIDIA H100 80GB HBM3", "fp16") == "my-student-v2.10.3.0.nvidia-h100-80gb-hbm3.fp16.engine"
    assert parse_engine_name("model.engine") is None
    assert sidecar_path("engines/" + name) == Path("engines/" + name + ".json")


def test_engine_name_rejects_bad_parts():
    with pytest.raises(HBAFError, match="precision"):
        engine_name("student", "10.3.0", "orin", "bf16")
    with pytest.raises(HBAFError, match="TensorRT version"):
        engine_name("student", "ten", "orin", "fp16")


def make_sidecar(**over) -> Sidecar:
    base = dict(
        onnx_sha256="ab" * 32, tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
        precision="int8", profiles=Profiles.parse("1,16,4", "1,300,32", "4,1000,128"), model=SPEC,
        package_version="0.1.0", built_at="2025-01-01T00:00:00+00:00",
        onnx_path="/opt/models/student.int8.onnx", workspace_mb=2048, strongly_typed=True,
    )
    base.update(over)
    return Sidecar(**base)


def test_sidecar_json_round_trip():
    side = make_sidecar()
    text = side.to_json()
    data = json.loads(text)
    assert data["profiles"] == {"min": [1, 16, 4], "opt": [1, 300, 32], "max": [4, 1000, 128]}
    assert data["model"]["labels"] == LABELS and data["model"]["context_size"] == K and data["model"]["memory_dim"] == D
    back = Sidecar.from_json(text)
    assert back == side
    assert Sidecar.from_json(json.dumps({**data, "future_field": 1})) == side  # unknown keys are ignored


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"precision": "int8"}), "lacks"),
    ],
)
def test_sidecar_rejects_bad_json(text, match):
    with pytest.raises(HBAFError, match=match):
        Sidecar.from_json(text)


def test_sidecar_rejects_bad_profile():
    data = json.loads(make_sidecar().to_json())
    data["profiles"]["max"] = [4, 1000]
    with pytest.raises(HBAFError, match="malformed"):
        Sidecar.from_json(json.dumps(data))


def test_build_command_is_exact():
    cmd = make_sidecar().build_command("engines")
    assert cmd == ("hbaf-export engine --onnx /opt/models/student.int8.onnx --precision int8 --out engines "
                   "--min 1,16,4 --opt 1,300,32 --max 4,1000,128 --workspace-mb 2048")


def test_compat_accepts_matching_machine():
    side = make_sidecar()
    check_engine_compat(side, "10.3.0.30", "Orin", "8.7")
    check_engine_compat(make_sidecar(gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0"),
                        "10.3.0.30", "nvidia-h100-80gb-hbm3", "9.0")


@pytest.mark.parametrize(
    "machine,expect",
    [
        (("10.7.0.23", "Orin", "8.7"), "TensorRT 10.3.0.30 (this machine has 10.7.0.23)"),
        (("10.3.0.30", "NVIDIA H100 80GB HBM3", "8.7"), "GPU Orin (this machine has NVIDIA H100 80GB HBM3)"),
        (("10.3.0.30", "Orin", "9.0"), "compute capability 8.7 (this machine has 9.0)"),
    ],
)
def test_compat_mismatch_says_how_to_rebuild(machine, expect):
    engine = Path("engines") / "student.10.3.0.30.orin.int8.engine"
    with pytest.raises(HBAFError) as info:
        check_engine_compat(make_sidecar(), *machine, engine_path=engine)
    msg = str(info.value)
    assert expect in msg
    assert "\n" not in msg
    assert msg.startswith("student.10.3.0.30.orin.int8.engine was built for")
    assert "`hbaf-export engine --onnx /opt/models/student.int8.onnx --precision int8 --out engines --min 1,16,4" in msg


def test_compat_lists_every_mismatch():
    with pytest.raises(HBAFError) as info:
        check_engine_compat(make_sidecar(), "8.6.2", "Xavier", "7.2")
    msg = str(info.value)
    assert "TensorRT 10.3.0.30" in msg and "GPU Orin" in msg and "compute capability 8.7" in msg


# --------------------------------------------------------------------------- engine files, before TensorRT


def write_engine(tmp_path: Path, payload: bytes, *, with_sidecar: bool = True, **over) -> Path:
    import hashlib

    engine = tmp_path / "student.10.3.0.30.orin.fp16.engine"
    engine.write_bytes(payload)
    if with_sidecar:
        side = make_sidecar(precision="fp16", engine_bytes=len(payload), engine_sha256=hashlib.sha256(payload).hexdigest(), **over)
        sidecar_path(engine).write_text(side.to_json())
    return engine


def test_engine_file_errors_before_tensorrt(tmp_path):
    from edge_runtime.trt_backend import TensorRTBackend, read_engine

    with pytest.raises(HBAFError, match="does not exist"):
        TensorRTBackend(tmp_path / "nope.engine")
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    with pytest.raises(HBAFError, match="is empty"):
        TensorRTBackend(empty)

    engine = write_engine(tmp_path, b"\x01" * 4096, with_sidecar=False)
    with pytest.raises(HBAFError) as info:
        read_engine(engine)
    msg = str(info.value)
    assert "has no sidecar student.10.3.0.30.orin.fp16.engine.json" in msg
    assert "hbaf-export engine --onnx student.onnx --precision fp16" in msg


def test_truncated_and_foreign_engines_are_refused(tmp_path):
    from edge_runtime.trt_backend import read_engine

    payload = bytes(range(256)) * 64
    engine = write_engine(tmp_path, payload)
    data, side = read_engine(engine)  # an intact pair passes
    assert data == payload and side.precision == "fp16"

    engine.write_bytes(payload[:1000])  # truncated copy
    with pytest.raises(HBAFError, match="truncated or replaced") as info:
        read_engine(engine)
    assert "--precision fp16" in str(info.value)

    engine.write_bytes(bytes(reversed(payload)))  # same size, other bytes
    with pytest.raises(HBAFError, match="corrupted or foreign"):
        read_engine(engine)

    sidecar_path(engine).write_text("{broken")
    with pytest.raises(HBAFError, match="not valid JSON"):
        read_engine(engine)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here, so the not-installed message cannot show")
def test_backend_without_tensorrt_is_one_line(tmp_path):
    from edge_runtime.trt_backend import TensorRTBackend

    engine = write_engine(tmp_path, b"\x07" * 2048)
    with pytest.raises(HBAFError, match="TensorRT is not installed: on Jetson install JetPack's python3-libnvinfer"):
        TensorRTBackend(engine)


# --------------------------------------------------------------------------- ONNX compatibility checker


def test_good_contract_graph_passes_and_runs(tmp_path):
    path = save(make_contract_onnx(), tmp_path / "student.onnx")
    assert check_onnx_for_tensorrt(path) == []
    model = read_onnx(path)
    assert memory_input_dims(model) == (K, D)
    assert onnx_metadata(model)["labels"] == LABELS
    assert not has_qdq(model)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, emb, gate = sess.run(None, contract_feeds(b=3, t=40, ln=7))
    assert probs.shape == (3, C) and emb.shape == (3, D) and gate.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_int64_matmul_is_flagged():
    problems = check_onnx_for_tensorrt(make_contract_onnx(int64_matmul=True))
    assert len(problems) == 1, problems  # a valid graph otherwise: onnx.checker is happy
    assert problems[0].startswith("MatMul 'ids_proj' has int64 inputs ['ids_sum', 'w_int']"), problems


def test_unsupported_op_is_flagged():
    problems = check_onnx_for_tensorrt(make_contract_onnx(unsupported_op="Unique"))
    assert len(problems) == 1
    assert any(p.startswith("operator Unique (1 node)") and "not supported" in p for p in problems), problems


def test_wrong_input_dtype_is_flagged():
    problems = check_onnx_for_tensorrt(make_contract_onnx(ids_dtype=TensorProto.INT64))
    assert len(problems) == 1
    assert any(p.startswith("input 'input_ids' is int64, the contract needs int32") for p in problems), problems


def test_static_batch_and_old_opset_are_flagged():
    problems = check_onnx_for_tensorrt(make_contract_onnx(static_batch=True))
    assert any(p.startswith("input axis B (fixed to 1) in audio_feats[0], audio_mask[0], input_ids[0]") for p in problems), problems
    assert any(p.startswith("output axis B (fixed to 1) in probs[0], utt_emb[0], gate[0]") for p in problems), problems
    assert len(problems) == 2, problems
    model = make_contract_onnx()
    model.opset_import[0].version = 11
    assert any("opset 11 is outside 13..20" in p for p in check_onnx_for_tensorrt(model))


def test_symmetric_qdq_passes_and_asymmetric_is_flagged():
    sym = make_contract_onnx(qdq_zero_point=0)
    assert has_qdq(sym)
    assert check_onnx_for_tensorrt(sym) == []

    asym = check_onnx_for_tensorrt(make_contract_onnx(qdq_zero_point=3))
    assert sum("zero point is not 0 (asymmetric)" in p for p in asym) == 2, asym

    uint8 = check_onnx_for_tensorrt(make_contract_onnx(qdq_zero_point=128, qdq_zp_dtype=TensorProto.UINT8))
    assert any("zero point is uint8; TensorRT needs int8" in p for p in uint8), uint8


def test_missing_contract_input_is_flagged():
    model = make_contract_onnx()
    model.graph.input.pop()  # memory_mask becomes undefined
    problems = check_onnx_for_tensorrt(model)
    assert any("['memory_mask'] are missing" in p for p in problems), problems
    assert any(p.startswith("onnx.checker:") for p in problems), problems


def test_fixed_axes_must_agree_and_be_fixed():
    model = make_contract_onnx()
    mask = next(i for i in model.graph.input if i.name == "memory_mask")
    mask.type.tensor_type.shape.dim[1].dim_value = K + 1
    problems = check_onnx_for_tensorrt(model)
    assert problems == [f"axis K is {K} in memory[1] but {K + 1} in memory_mask[1]; the graph is inconsistent: export it again"], problems
    model = make_contract_onnx()
    feats = next(i for i in model.graph.input if i.name == "audio_feats")
    feats.type.tensor_type.shape.dim[2].dim_param = "mels"
    problems = check_onnx_for_tensorrt(model)
    assert any(p.startswith("input 'audio_feats' axis 2 (F) must be a fixed size") for p in problems), problems


@pytest.mark.parametrize("content", [b"", b"this is not a model at all\n", bytes(range(256)) * 8])
def test_corrupt_onnx_is_one_line_error(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(HBAFError) as info:
        check_onnx_for_tensorrt(bad)
    assert "\n" not in str(info.value) and "bad.onnx" in str(info.value)


# --------------------------------------------------------------------------- builder checks and CLI (no GPU)


def test_builder_inspect_reads_contract(tmp_path):
    path = save(make_contract_onnx(), tmp_path / "student.onnx")
    _, info = EngineBuilder(path, "fp16").inspect()
    assert info == {"graph": "fusion", "spec": SPEC, "shapes": None, "quantized": False, "model_version": "0.1.0"}


def test_builder_needs_the_model_spec_in_the_metadata(tmp_path):
    model = make_contract_onnx()
    del model.metadata_props[:]
    path = save(model, tmp_path / "bare.onnx")
    assert check_onnx_for_tensorrt(path) == []  # a valid graph, but the sidecar could not say what model it is
    with pytest.raises(HBAFError, match="carries no HBAF labels in its metadata"):
        EngineBuilder(path, "fp16").inspect()


def test_builder_precision_must_match_quantization(tmp_path):
    plain = save(make_contract_onnx(), tmp_path / "student.onnx")
    with pytest.raises(HBAFError, match="no Q/DQ nodes"):
        EngineBuilder(plain, "int8").inspect()
    quant = save(make_contract_onnx(qdq_zero_point=0), tmp_path / "student.int8.onnx")
    with pytest.raises(HBAFError, match="build it with --precision int8"):
        EngineBuilder(quant, "fp16").inspect()
    assert EngineBuilder(quant, "int8").inspect()[1]["quantized"] is True


def test_builder_refuses_bad_onnx_with_all_problems(tmp_path):
    path = save(make_contract_onnx(int64_matmul=True, ids_dtype=TensorProto.INT64), tmp_path / "student.onnx")
    with pytest.raises(HBAFError) as info:
        EngineBuilder(path, "fp16").build(tmp_path / "engines")
    msg = str(info.value)
    assert "not ready for TensorRT" in msg and "MatMul" in msg and "input_ids" in msg
    assert not (tmp_path / "engines").exists()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here, so the not-installed message cannot show")
def test_cli_tensorrt_missing_is_one_line(tmp_path):
    save(make_contract_onnx(), tmp_path / "student.onnx")
    proc = run_cli("--onnx", "student.onnx", "--precision", "fp16", "--out", "engines", "--timing-cache", "cache.bin", cwd=tmp_path)
    line = assert_one_line_error(proc)
    assert line.startswith("error: TensorRT is not installed: on Jetson install JetPack's python3-libnvinfer")
    assert "pip install .[jetson]" in line
    assert not (tmp_path / "engines").exists()


@pytest.mark.parametrize(
    "args,match",
    [
        (["--onnx", "student.onnx", "--min", "1,16"], "BATCH,FRAMES,TOKENS"),
        (["--onnx", "student.onnx", "--max", "8,2000,128"], "exceeds 1000"),
        (["--onnx", "student.onnx", "--precision", "bf16"], "invalid choice"),
        (["--onnx", "missing.onnx"], "ONNX file not found: missing.onnx"),
        (["--onnx", "student.onnx", "--precision", "int8"], "no Q/DQ nodes"),
        (["--precision", "fp16"], "--onnx"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, args, match):
    save(make_contract_onnx(), tmp_path / "student.onnx")
    line = assert_one_line_error(run_cli(*args, cwd=tmp_path))
    assert match in line


@pytest.mark.skipif(_cuda_available() or importlib.util.find_spec("pycuda") is not None, reason="a GPU query tool is installed here")
def test_gpu_info_without_cuda_is_one_line():
    from edge_runtime.trt_backend import gpu_info

    with pytest.raises(HBAFError, match="no CUDA device 0 found") as info:
        gpu_info(0)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed here")
def test_cli_torch_trt_without_torch_tensorrt_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export.cli", "torch-trt", "--checkpoint", str(tmp_path / "ckpt"),
                           "--out", "student.fp16.ep"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    line = assert_one_line_error(proc)
    assert line.startswith("error: torch-tensorrt is not installed") and "hbaf-export engine" in line
    assert not (tmp_path / "student.fp16.ep").exists()
    bad = assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "export.cli", "torch-trt", "--checkpoint", "ckpt", "--out", "x.ep", "--precision", "int8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}))
    assert "--precision int8 needs --manifest" in bad


def test_main_returns_2_in_process(tmp_path, capsys):
    assert export_main(["engine", "--onnx", str(tmp_path / "none.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- torch-tensorrt path (CPU parts)


class TinyStudent:
    """Built lazily so collecting this file does not import torch."""

    @staticmethod
    def make():
        import torch
        from torch import nn

        class Student(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.sub = nn.Conv1d(80, 32, kernel_size=3, stride=2, padding=1)
                self.emb = nn.Embedding(4000, 32)
                self.mem = nn.Linear(D, 32)
                self.cls = nn.Linear(32, C)
                self.out = nn.Linear(32, D)
                self.gate = nn.Linear(64, 2)

            def forward(self, audio_feats, audio_mask, input_ids, attention_mask, memory, memory_mask):
                a = torch.relu(self.sub(audio_feats.transpose(1, 2))).transpose(1, 2)  # [B, T/2, 32]
                m = audio_mask[:, ::2].unsqueeze(-1)
                a = (a * m).sum(1) / m.sum(1).clamp(min=1.0)
                t_mask = attention_mask.unsqueeze(-1).to(a.dtype)
                t = (self.emb(input_ids.long()) * t_mask).sum(1) / t_mask.sum(1).clamp(min=1.0)
                mm = memory_mask.unsqueeze(-1)
                ctx = self.mem((memory * mm).sum(1) / mm.sum(1).clamp(min=1.0))
                h = a + t + ctx
                probs = torch.softmax(self.cls(h), dim=-1)
                return probs, self.out(h), torch.sigmoid(self.gate(torch.cat([a, t], dim=-1)))

        torch.manual_seed(0)
        return Student().eval()


def _torch_feeds(b, t, ln):
    import torch

    return tuple(torch.from_numpy(v) for v in contract_feeds(b, t, ln).values())


def test_torch_export_with_shared_dynamic_dims():
    pytest.importorskip("torch")
    from export.torch_trt import export_student

    model = TinyStudent.make()
    profiles = Profiles.parse("1,16,4", "1,300,32", "4,400,64")
    program = export_student(model, profiles, SPEC)
    runner = program.module()
    for b, t, ln in [(1, 16, 4), (3, 123, 17), (4, 400, 64)]:
        feeds = _torch_feeds(b, t, ln)
        got = runner(*feeds)
        want = model(*feeds)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-5)


def _dim_auto_takes_range() -> bool:
    try:
        from torch.export import Dim

        return callable(getattr(Dim, "AUTO", None)) and Dim.AUTO(min=1, max=2) is not None
    except (ImportError, TypeError):
        return False


@pytest.mark.skipif(not _dim_auto_takes_range(), reason="torch < 2.7: named Dims cannot express the HBAF audio subsampling guards")
def test_torch_export_of_the_real_hbaf_model():
    import torch

    from export.torch_trt import export_student
    from hbaf.model import HBAF, preset

    model = HBAF(preset("tiny", dropout=0.0), LABELS).eval()
    spec = ModelSpec.from_model(model)
    k, d = spec.context_size, spec.memory_dim
    profiles = Profiles.parse("1,16,4", "1,120,16", "3,400,40")
    runner = export_student(model, profiles, spec).module()
    rng = np.random.default_rng(3)
    for b, t, ln in [(1, 16, 4), (3, 399, 40), (2, 123, 9)]:
        feeds = (
            torch.from_numpy(rng.standard_normal((b, t, spec.feature_dim)).astype(np.float32)),
            torch.ones(b, t),
            torch.from_numpy(rng.integers(1000, 3000, (b, ln)).astype(np.int32)),
            torch.ones(b, ln, dtype=torch.int32),
            torch.from_numpy(rng.standard_normal((b, k, d)).astype(np.float32)),
            torch.ones(b, k),
        )
        with torch.no_grad():
            got, want = runner(*feeds), model(*feeds)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_torch_export_static_axis_when_min_equals_max():
    pytest.importorskip("torch")
    from export.torch_trt import dynamic_shapes, example_inputs

    profiles = Profiles.parse("1,16,4", "1,300,32", "1,400,64")
    shapes = dynamic_shapes(profiles)
    assert all(0 not in s for s in shapes if s)  # batch fixed to 1
    assert 1 in shapes[0] and 1 in shapes[2]
    feats, _, ids, *_ = example_inputs(profiles, SPEC)
    assert feats.shape == (1, 300, 80) and ids.shape == (1, 32) and str(ids.dtype) == "torch.int32"
    wide = example_inputs(Profiles(), SPEC)
    assert wide[0].shape[0] == 2  # opt batch 1 would specialise the batch axis: trace with 2


def test_modelopt_int8_calibration_on_cpu():
    pytest.importorskip("modelopt.torch.quantization")
    import torch
    from modelopt.torch.quantization.nn import TensorQuantizer

    from export.torch_trt import quantize_student

    model = TinyStudent.make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [_torch_feeds(2, 60, 10) for _ in range(3)]
    qmodel = quantize_student(model, batches, progress=False)
    quantizers = [m for m in qmodel.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    assert quantizers and all(q.amax is not None for q in quantizers)
    assert not any(isinstance(m, TensorQuantizer) for m in model.modules())  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        q_probs = qmodel(*batches[0])[0]
        f_probs = model(*batches[0])[0]
    assert not torch.equal(q_probs, f_probs)  # fake-quantized maths differs...
    assert (q_probs.argmax(-1) == f_probs.argmax(-1)).float().mean() >= 0.5  # ...but not wildly
    with pytest.raises(HBAFError, match="no batches"):
        quantize_student(model, [])


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed here")
def test_compile_student_without_torch_tensorrt_is_clear():
    from export.torch_trt import compile_student, load_compiled

    with pytest.raises(HBAFError, match="torch-tensorrt is not installed"):
        compile_student(TinyStudent.make(), SPEC)
    with pytest.raises(HBAFError, match="int8 needs calib_batches"):
        compile_student(TinyStudent.make(), SPEC, precision="int8")
    with pytest.raises(HBAFError, match="missing or empty"):
        load_compiled("/nonexistent/student.ep")


# --------------------------------------------------------------------------- any graph: profiles, sidecars, the runner's checks


ENCODER_PROFILE = "mel:1x80x1000:1x80x1000:4x80x1000"


def make_encoder_onnx(*, batch: str | int = "B", profile: ShapeProfile | None = None) -> onnx.ModelProto:
    """A graph shaped like the recogniser's encoder (``mel [B,80,1000]`` -> ``states [B,500,W]``):
    strided Conv, GELU, LayerNorm and one self-attention, with none of the fusion model's names."""
    from export.engine import set_graph_profile

    rng = np.random.default_rng(2)
    w = 32

    def init(name, *shape, scale=0.1):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("conv_w", w, 80, 3), init("conv_b", w), init("ln_g", w, scale=1.0), init("ln_b", w),
        init("wq", w, w), init("wk", w, w), init("wv", w, w),
        numpy_helper.from_array(np.array(w ** -0.5, dtype=np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Conv", ["mel", "conv_w", "conv_b"], ["c"], strides=[2], pads=[1, 1], kernel_shape=[3]),
        helper.make_node("Sigmoid", ["c"], ["sg"]),
        helper.make_node("Mul", ["c", "sg"], ["g"]),  # SiLU
        helper.make_node("Transpose", ["g"], ["x"], perm=[0, 2, 1]),  # [B, 500, W]
        helper.make_node("LayerNormalization", ["x", "ln_g", "ln_b"], ["h"], axis=-1),
        helper.make_node("MatMul", ["h", "wq"], ["q"]),
        helper.make_node("MatMul", ["h", "wk"], ["k"]),
        helper.make_node("MatMul", ["h", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["qks"]),
        helper.make_node("Softmax", ["qks"], ["att"], axis=-1),
        helper.make_node("MatMul", ["att", "v"], ["a"]),
        helper.make_node("Add", ["x", "a"], ["states"]),
    ]
    graph = helper.make_graph(nodes, "encoder", [_vi("mel", TensorProto.FLOAT, [batch, 80, 1000])],
                              [_vi("states", TensorProto.FLOAT, [batch, 500, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    if profile is not None:
        set_graph_profile(model, "encoder", profile)
    return model


def test_shape_profile_by_tensor_name():
    enc = ShapeProfile.parse([ENCODER_PROFILE])
    assert enc.shapes == {"mel": ((1, 80, 1000), (1, 80, 1000), (4, 80, 1000))}
    assert enc.covers("mel", (3, 80, 1000)) and not enc.covers("mel", (5, 80, 1000)) and not enc.covers("mel", (1, 80))
    assert ShapeProfile.parse(enc.cli_args()[1::2]) == enc
    assert ShapeProfile.from_dict(json.loads(json.dumps(enc.to_dict()))) == enc
    # a decoder's past key/values: the batch is not the first axis, and nothing is named like the fusion model
    from hbaf.contract import TensorSpec

    past = TensorSpec("past", "float32", ("N", 2, "B", "P", "W"))
    tokens = TensorSpec("tokens", "int64", ("B", "L"))
    dec = ShapeProfile.from_axes([tokens, past], {"N": 4, "W": 384, "B": (1, 1, 5), "L": (1, 1, 1), "P": (1, 16, 224)})
    assert dec.shapes["past"] == ((4, 2, 1, 1, 384), (4, 2, 1, 16, 384), (4, 2, 5, 224, 384))
    assert dec.shapes["tokens"] == ((1, 1), (1, 1), (5, 1))
    with pytest.raises(HBAFError, match="no size for axis P of input 'past'"):
        ShapeProfile.from_axes([past], {"N": 4, "W": 384, "B": 1})
    # the fusion profile is one of these
    assert Profiles().shape_profile(SPEC).shapes["audio_feats"] == ((1, 16, 80), (1, 300, 80), (8, 1000, 80))


@pytest.mark.parametrize("texts,match", [
    (["mel:1x80x1000:1x80x1000"], "NAME:MIN:OPT:MAX"),
    (["mel:1x80:1x80x1000:4x80x1000"], "different ranks"),
    (["mel:4x80x1000:1x80x1000:4x80x1000"], "min <= opt <= max"),
    ([":1:1:1"], "NAME:MIN:OPT:MAX"),
])
def test_shape_profile_rejects(texts, match):
    with pytest.raises(HBAFError, match=match) as info:
        ShapeProfile.parse(texts)
    assert "\n" not in str(info.value)


def make_graph_sidecar(**over) -> Sidecar:
    base = dict(graph="encoder", shapes=ShapeProfile.parse([ENCODER_PROFILE]), onnx_sha256="cd" * 32,
                tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", precision="fp16",
                package_version="0.1.0", built_at="2025-01-01T00:00:00+00:00", onnx_path="/opt/models/whisper.encoder.onnx",
                l4t_release="36.4.3", board="NVIDIA Jetson AGX Orin Developer Kit")
    base.update(over)
    return Sidecar(**base)


def test_sidecar_of_any_graph():
    side = make_graph_sidecar()
    back = Sidecar.from_json(side.to_json())
    assert back == side and back.model is None and not back.is_fusion
    assert back.input_shapes().shapes["mel"][2] == (4, 80, 1000)
    assert side.build_command("engines") == ("hbaf-export engine --onnx /opt/models/whisper.encoder.onnx --precision fp16 "
                                             "--out engines --shape mel:1x80x1000:1x80x1000:4x80x1000 --workspace-mb 1024")
    data = json.loads(side.to_json())
    del data["shapes"]
    with pytest.raises(HBAFError, match=r"lacks \['shapes'\]"):
        Sidecar.from_json(json.dumps(data))
    fusion = json.loads(make_sidecar().to_json())
    assert fusion["graph"] == "fusion" and fusion["board"] == "" and Sidecar.from_json(json.dumps(fusion)).input_shapes().names[0] == "audio_feats"
    del fusion["graph"], fusion["board"], fusion["l4t_release"], fusion["shapes"]  # a format-2 sidecar: a fusion engine
    assert Sidecar.from_json(json.dumps(fusion)) == make_sidecar()


def test_every_orin_is_orin_so_the_board_decides():
    """Every Orin reports GPU "Orin" and compute capability 8.7; an engine built on an AGX Orin is
    refused on an Orin Nano by the board the sidecar recorded."""
    agx = make_sidecar(board="NVIDIA Jetson AGX Orin Developer Kit", l4t_release="36.4.3")
    check_engine_compat(agx, "10.3.0.30", "Orin", "8.7", l4t_release="36.4.3", board="NVIDIA Jetson AGX Orin Developer Kit")
    with pytest.raises(HBAFError) as info:
        check_engine_compat(agx, "10.3.0.30", "Orin", "8.7", engine_path=Path("engines/student.10.3.0.30.orin.int8.engine"),
                            l4t_release="36.4.3", board="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
    msg = str(info.value)
    assert "board NVIDIA Jetson AGX Orin Developer Kit (this machine is NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super)" in msg
    assert "hbaf-export engine --onnx /opt/models/student.int8.onnx" in msg and "\n" not in msg
    with pytest.raises(HBAFError, match=r"Jetson Linux R36.4.3 \(this machine has R36.4.0\)"):
        check_engine_compat(agx, "10.3.0.30", "Orin", "8.7", l4t_release="36.4.0", board="NVIDIA Jetson AGX Orin Developer Kit")
    with pytest.raises(HBAFError, match="this machine is not a Jetson"):
        check_engine_compat(agx, "10.3.0.30", "Orin", "8.7")
    check_engine_compat(make_sidecar(), "10.3.0.30", "Orin", "8.7", l4t_release="36.4.3", board="anything")  # recorded nothing


def test_no_sidecar_hint_leaves_the_profile_to_the_model(tmp_path):
    """The rebuild hint must not carry log-mel limits (--max 8,1000,128), which the Whisper-state student refuses."""
    from edge_runtime.trt_runner import read_engine

    engine = write_engine(tmp_path, b"\x01" * 64, with_sidecar=False)
    with pytest.raises(HBAFError) as info:
        read_engine(engine)
    msg = str(info.value)
    assert "`hbaf-export engine --onnx student.onnx --precision fp16 --out " in msg and "--workspace-mb 1024`" in msg
    assert "--max" not in msg and "--min" not in msg


def test_stale_engine_is_refused_before_tensorrt(tmp_path):
    """The ONNX an engine was built from changed since: refused on the sha256 the sidecar recorded."""
    import hashlib

    from edge_runtime.trt_backend import TensorRTBackend
    from edge_runtime.trt_runner import check_source_onnx

    onnx_path = save(make_contract_onnx(), tmp_path / "student.onnx")
    engine = write_engine(tmp_path, b"\x05" * 1024, onnx_path=str(onnx_path),
                          onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest())
    assert check_source_onnx(Sidecar.read(sidecar_path(engine)), engine) is True
    save(make_contract_onnx(qdq_zero_point=0), onnx_path)  # exported again (here: quantized) after the build
    with pytest.raises(HBAFError) as info:
        TensorRTBackend(engine)
    msg = str(info.value)
    assert msg.startswith(f"engine {engine} is stale: {onnx_path} changed after the engine was built from it")
    assert f"--onnx {onnx_path} --precision fp16" in msg
    onnx_path.unlink()  # an engine copied without its ONNX is used as built
    assert check_source_onnx(Sidecar.read(sidecar_path(engine)), engine) is False


def test_fusion_backend_refuses_an_engine_of_another_graph(tmp_path):
    import hashlib

    from edge_runtime.trt_backend import TensorRTBackend

    payload = b"\x09" * 512
    engine = tmp_path / "whisper-encoder.10.3.0.30.orin.fp16.engine"
    engine.write_bytes(payload)
    sidecar_path(engine).write_text(make_graph_sidecar(engine_bytes=len(payload), engine_sha256=hashlib.sha256(payload).hexdigest()).to_json())
    with pytest.raises(HBAFError, match="holds a 'encoder' graph, not an HBAF fusion model"):
        TensorRTBackend(engine)


def test_runner_names_no_graph():
    """The shared runner holds no fusion-specific names: the contract's tensor names appear only in the fusion backend."""
    import edge_runtime.trt_runner as runner
    from hbaf.contract import INPUT_NAMES, OUTPUT_NAMES

    source = Path(runner.__file__).read_text()
    assert not [n for n in (*INPUT_NAMES, *OUTPUT_NAMES) if f'"{n}"' in source or f"'{n}'" in source]
    assert "INPUT_NAMES" not in source and "OUTPUT_NAMES" not in source and "ModelSpec" not in source


def test_builder_takes_any_graph_with_its_own_profile(tmp_path):
    enc = save(make_encoder_onnx(profile=ShapeProfile.parse([ENCODER_PROFILE])), tmp_path / "encoder.onnx")
    _, info = EngineBuilder(enc, "fp16").inspect()
    assert info["graph"] == "encoder" and info["spec"] is None and info["shapes"] == ShapeProfile.parse([ENCODER_PROFILE])
    wider = ShapeProfile.parse(["mel:1x80x1000:2x80x1000:8x80x1000"])
    assert EngineBuilder(enc, "fp16", shapes=wider).inspect()[1]["shapes"] == wider  # --shape wins
    static = save(make_encoder_onnx(batch=1), tmp_path / "static.onnx")
    assert EngineBuilder(static, "fp16").inspect()[1]["shapes"].shapes == {"mel": ((1, 80, 1000),) * 3}

    bare = save(make_encoder_onnx(), tmp_path / "bare.onnx")
    with pytest.raises(HBAFError, match=r"carries no optimization profile .*dynamic input \['mel'\] with --shape"):
        EngineBuilder(bare, "fp16").inspect()
    with pytest.raises(HBAFError, match=r"names unknown inputs \['audio'\]; it lacks \['mel'\]"):
        EngineBuilder(bare, "fp16", shapes=ShapeProfile.parse(["audio:1x80:1x80:1x80"])).inspect()
    with pytest.raises(HBAFError, match="not an HBAF fusion model .*not --min/--opt/--max"):
        EngineBuilder(bare, "fp16", profiles=Profiles()).inspect()
    fusion = save(make_contract_onnx(), tmp_path / "student.onnx")
    with pytest.raises(HBAFError, match="is an HBAF fusion model: give its profile with --min/--opt/--max, not --shape"):
        EngineBuilder(fusion, "fp16", shapes=wider).inspect()


def test_the_encoder_shaped_graph_runs_on_onnxruntime(tmp_path):
    """The GPU test below compares TensorRT with this; here the graph itself is checked."""
    import onnxruntime as ort

    path = save(make_encoder_onnx(), tmp_path / "encoder.onnx")
    assert check_onnx_for_tensorrt(path) != [] and check_graph_for_tensorrt(path) == []
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (states,) = sess.run(None, {"mel": np.random.default_rng(0).standard_normal((2, 80, 1000)).astype(np.float32)})
    assert states.shape == (2, 500, 32) and np.isfinite(states).all()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here, so the not-installed message cannot show")
def test_cli_any_graph_reaches_the_build(tmp_path):
    save(make_encoder_onnx(), tmp_path / "encoder.onnx")
    line = assert_one_line_error(run_cli("--onnx", "encoder.onnx", "--shape", ENCODER_PROFILE, cwd=tmp_path))
    assert line.startswith("error: TensorRT is not installed")
    line = assert_one_line_error(run_cli("--onnx", "encoder.onnx", "--shape", "mel:1x80x1000", cwd=tmp_path))
    assert "NAME:MIN:OPT:MAX" in line
    line = assert_one_line_error(run_cli("--onnx", "encoder.onnx", cwd=tmp_path))
    assert "carries no optimization profile" in line
    line = assert_one_line_error(run_cli("--onnx", "encoder.onnx", "--shape", ENCODER_PROFILE, "--max", "1,2,3", cwd=tmp_path))
    assert "not both" in line


def test_jetson_release_and_board_parsing():
    from edge_runtime.jetson import jetpack_for_l4t, parse_board_model, parse_l4t_release

    jp62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    assert parse_l4t_release(jp62) == "36.4.3" and jetpack_for_l4t("36.4.3") == "6.2"
    assert parse_l4t_release("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic") == "36.4.0"
    assert jetpack_for_l4t("36.4.0") == "6.1" and jetpack_for_l4t("36.4.4") == "6.2.1" and jetpack_for_l4t("36.3.0") == "6.0"
    assert jetpack_for_l4t("35.4.1").startswith("5.1") and jetpack_for_l4t("") == ""
    assert parse_l4t_release("") == "" and parse_l4t_release("Ubuntu 22.04") == ""
    assert parse_board_model("NVIDIA Jetson Orin Nano Developer Kit\x00") == "NVIDIA Jetson Orin Nano Developer Kit"


def test_torch_trt_save_keeps_the_dynamic_shapes():
    """torch_tensorrt.save re-traces at the example shapes on current releases unless given dynamic_shapes."""
    pytest.importorskip("torch")
    from export.torch_trt import dynamic_shapes, save_arguments

    shapes = dynamic_shapes(Profiles.parse("1,16,4", "2,100,16", "4,400,64"))
    current = {"module", "file_path", "extra_files", "output_format", "inputs", "arg_inputs", "kwarg_inputs", "retrace",
               "dynamic_shapes"}
    assert save_arguments(current, ["x"], shapes) == {"output_format": "exported_program", "arg_inputs": ["x"], "dynamic_shapes": shapes}
    older = {"module", "file_path", "output_format", "inputs", "arg_inputs", "kwarg_inputs", "retrace"}
    assert save_arguments(older, ["x"], shapes) == {"output_format": "exported_program", "arg_inputs": ["x"], "retrace": False}
    oldest = {"module", "file_path", "output_format", "inputs"}
    assert save_arguments(oldest, ["x"], shapes) == {"output_format": "exported_program", "inputs": ["x"]}


def test_old_torch_refuses_dynamic_frames_and_takes_fixed_ones():
    """JetPack 6.1's torch 2.5 has no Dim.AUTO ranges: a dynamic-frame profile is refused in one line before tracing;
    fixed frames export with the named dims such a torch uses (the real HBAF model, here with named dims forced)."""
    torch = pytest.importorskip("torch")
    from export.torch_trt import check_torch_for_profile, export_student
    from hbaf.model import HBAF, preset

    dynamic = Profiles.parse("1,8,4", "1,150,32", "4,500,128")
    with pytest.raises(HBAFError) as info:
        check_torch_for_profile(dynamic, (2, 5), auto_dims=False)
    msg = str(info.value)
    assert msg.startswith("torch 2.5 cannot export the student with dynamic frames (needs torch >= 2.7")
    assert "hbaf-export engine --onnx MODEL.onnx" in msg and "equal FRAMES" in msg
    check_torch_for_profile(dynamic, (2, 7), auto_dims=True)

    model = HBAF(preset("tiny", dropout=0.0), LABELS).eval()
    spec = ModelSpec.from_model(model)
    fixed = Profiles.parse("1,120,4", "1,120,16", "3,120,40")
    runner = export_student(model, fixed, spec, auto=False).module()
    rng = np.random.default_rng(5)
    for b, ln in [(1, 4), (3, 40), (2, 9)]:
        feeds = (torch.from_numpy(rng.standard_normal((b, 120, spec.feature_dim)).astype(np.float32)), torch.ones(b, 120),
                 torch.from_numpy(rng.integers(1000, 3000, (b, ln)).astype(np.int32)), torch.ones(b, ln, dtype=torch.int32),
                 torch.from_numpy(rng.standard_normal((b, spec.context_size, spec.memory_dim)).astype(np.float32)),
                 torch.ones(b, spec.context_size))
        with torch.no_grad():
            for g, w in zip(runner(*feeds), model(*feeds)):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    with pytest.raises(HBAFError, match="cannot export the student with dynamic frames"):
        export_student(model, Profiles.parse("1,16,4", "1,120,16", "3,400,40"), spec, auto=False)


# --------------------------------------------------------------------------- GPU (skipped without TensorRT + CUDA)


@pytest.mark.gpu
@needs_trt_gpu
@pytest.mark.parametrize("precision,qdq", [("fp32", None), ("fp16", None), ("int8", 0)])
def test_build_and_run_tiny_engine_matches_onnxruntime(tmp_path, precision, qdq):
    import onnxruntime as ort

    from edge_runtime.trt_backend import TensorRTBackend

    onnx_path = save(make_contract_onnx(qdq_zero_point=qdq), tmp_path / "tiny.onnx")
    profiles = Profiles.parse("1,16,4", "2,100,16", "4,400,64")
    builder = EngineBuilder(onnx_path, precision, profiles, workspace_mb=256, timing_cache=tmp_path / "cache.bin")
    engine_path, side = builder.build(tmp_path / "engines")
    assert engine_path.name.endswith(f".{precision}.engine") and side.is_file() and (tmp_path / "cache.bin").is_file()

    backend = TensorRTBackend(engine_path)
    assert backend.labels == LABELS and backend.context_size == K and backend.memory_dim == D
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tol = {"fp32": 1e-4, "fp16": 2e-2, "int8": 5e-2}[precision]
    for b, t, ln in [(1, 16, 4), (3, 250, 30), (4, 400, 64)]:
        feeds = contract_feeds(b, t, ln)
        got = backend.run(feeds)
        want = dict(zip(["probs", "utt_emb", "gate"], sess.run(None, feeds)))
        for name in want:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], atol=tol, rtol=tol)
    with pytest.raises(HBAFError, match="outside the engine profile"):
        backend.run(contract_feeds(1, 401, 8))
    backend.close()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is None or not _cuda_available(), reason="needs torch-tensorrt and a CUDA GPU")
def test_torch_tensorrt_compile_save_load(tmp_path):
    import torch

    from export.torch_trt import compile_student, load_compiled

    model = TinyStudent.make()
    profiles = Profiles.parse("1,16,4", "2,100,16", "4,400,64")
    out = tmp_path / "student.fp16.ep"
    compile_student(model, SPEC, profiles, precision="fp16", out=out)
    loaded = load_compiled(out)
    model = model.cuda()
    for b, t, ln in [(3, 250, 30), (1, 16, 4), (4, 400, 64)]:  # the saved program keeps the profile, not the example's shapes
        feeds = tuple(v.cuda() for v in _torch_feeds(b, t, ln))
        got = loaded(*feeds)
        want = model(*feeds)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.float(), w.float(), atol=2e-2, rtol=2e-2)


# --------------------------------------------------------------------------- GPU: the real shipped student and the recogniser's encoder


@pytest.fixture(scope="module")
def shipped_student_onnx(tmp_path_factory) -> Path:
    """The packaged student exported to the FP32 contract ONNX (what engines are built from)."""
    if not (HAS_TRT and _cuda_available()):
        pytest.skip("needs TensorRT and a CUDA GPU")
    from export.onnx_export import export_onnx
    from hbaf.io import ASSETS_DIR, PACKAGED_CHECKPOINT

    return export_onnx(ASSETS_DIR / PACKAGED_CHECKPOINT, tmp_path_factory.mktemp("shipped") / "student.onnx")


def _student_feeds(spec: ModelSpec, b: int, t: int, ln: int, seed: int) -> dict[str, np.ndarray]:
    """A padded batch shaped like the runtime's: states-like features, in-vocabulary ids, a half-full memory."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, t // 2), t + 1, b)
    lengths[0] = t
    feats = [rng.standard_normal((n, spec.feature_dim)).astype(np.float32) for n in lengths]
    ids = [np.concatenate([[101], rng.integers(1000, 20000, max(0, int(rng.integers(1, ln)) - 2)), [102]]).astype(np.int32)[:ln]
           for _ in range(b)]
    memory = rng.standard_normal((b, spec.context_size, spec.memory_dim)).astype(np.float32)
    mask = (np.arange(spec.context_size)[None] < spec.context_size // 2).astype(np.float32).repeat(b, 0)
    return batch_feeds(spec, feats, ids, memory, mask)


@pytest.mark.gpu
@needs_trt_gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_shipped_student_engine_matches_onnxruntime(shipped_student_onnx, ci_corpus, tmp_path, precision):
    """The real student (attention, LayerNorm, the gate; for int8 the calibrated Q/DQ form, strongly typed) built with
    its own profile, run through the fusion backend and the shared runner, against ONNX Runtime on the same ONNX."""
    import onnxruntime as ort

    from edge_runtime.trt_backend import TensorRTBackend

    onnx_path = shipped_student_onnx
    if precision == "int8":
        from calibration.report import quantize_onnx

        (res,) = quantize_onnx(onnx_path, ci_corpus / "manifest.jsonl", tmp_path, flavours=("trt",), method="minmax",
                               num=64, threads=2, workers=2)
        onnx_path = res.path
    engine_path, side = EngineBuilder(onnx_path, precision, workspace_mb=2048, timing_cache=tmp_path / "cache.bin").build(tmp_path / "engines")
    sidecar = Sidecar.read(side)
    assert sidecar.is_fusion and sidecar.strongly_typed == (precision == "int8")
    assert sidecar.profiles == Profiles.for_spec(sidecar.model)  # the model's own: 8 / 150 / 500 state frames

    backend = TensorRTBackend(engine_path)
    spec = backend.spec
    assert (backend.min_frames, backend.max_frames, backend.max_batch) == (8, 500, 8)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    atol = {"fp16": 2e-2, "int8": 6e-2}[precision]
    agree = total = 0
    for i, (b, t, ln) in enumerate([(1, 8, 4), (1, 150, 32), (4, 317, 60), (8, 500, 128)]):
        feeds = pad_feeds(_student_feeds(spec, b, t, ln, seed=i), min_frames=backend.min_frames, min_tokens=backend.min_tokens)
        got = backend.run(feeds)
        want = dict(zip(["probs", "utt_emb", "gate"], sess.run(None, feeds)))
        for name in want:
            assert got[name].shape == want[name].shape and np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got["probs"], want["probs"], atol=atol)
        np.testing.assert_allclose(got["gate"], want["gate"], atol=atol)
        agree += int((got["probs"].argmax(-1) == want["probs"].argmax(-1)).sum())
        total += b
    assert agree / total >= 0.9, (agree, total)
    backend.close()
    with pytest.raises(HBAFError, match="was closed"):
        backend.run(pad_feeds(_student_feeds(spec, 1, 8, 4, seed=0), min_tokens=backend.min_tokens))


@pytest.mark.gpu
@needs_trt_gpu
def test_runner_runs_a_graph_with_its_own_names(tmp_path):
    """The shared runner on a graph that is not the fusion model (the encoder's shape: mel [B,80,1000] -> states),
    its profile from the graph's own metadata."""
    import onnxruntime as ort

    from edge_runtime.trt_runner import EngineRunner

    onnx_path = save(make_encoder_onnx(profile=ShapeProfile.parse([ENCODER_PROFILE])), tmp_path / "encoder.onnx")
    engine_path, _ = EngineBuilder(onnx_path, "fp32", workspace_mb=512).build(tmp_path / "engines")
    runner = EngineRunner(engine_path, graph="encoder")
    assert runner.input_names == ("mel",) and runner.output_names == ("states",)
    assert runner.profile_shapes["mel"] == ((1, 80, 1000), (1, 80, 1000), (4, 80, 1000))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for b in (1, 3, 4):
        mel = np.random.default_rng(b).standard_normal((b, 80, 1000)).astype(np.float32)
        np.testing.assert_allclose(runner.run({"mel": mel})["states"], sess.run(None, {"mel": mel})[0], atol=1e-3, rtol=1e-3)
    with pytest.raises(HBAFError, match=r"outside the engine profile \(1, 80, 1000\)..\(4, 80, 1000\)"):
        runner.run({"mel": np.zeros((5, 80, 1000), np.float32)})
    with pytest.raises(HBAFError, match=r"missing \['mel'\]; unknown \['audio_feats'\]"):
        runner.run({"audio_feats": np.zeros((1, 80, 1000), np.float32)})
    runner.close()
    assert runner.closed

    # a load that fails after the GPU buffers exist frees them: ten such loads leave the free memory where it was
    import torch

    side = sidecar_path(engine_path)
    data = json.loads(side.read_text())
    data["shapes"] = {"x" if k == "mel" else k: v for k, v in data["shapes"].items()}
    side.write_text(json.dumps(data))
    torch.cuda.synchronize()
    free_before = torch.cuda.mem_get_info()[0]
    for _ in range(10):
        with pytest.raises(HBAFError, match=r"has inputs \['mel'\] its sidecar does not describe"):
            EngineRunner(engine_path, graph="encoder")
    torch.cuda.synchronize()
    assert free_before - torch.cuda.mem_get_info()[0] < 64 << 20


@pytest.mark.gpu
@needs_trt_gpu
def test_whisper_encoder_engine_matches_onnxruntime(tmp_path):
    """The recogniser's real encoder graph (hbaf-export asr), built with the profile it carries, through the shared runner."""
    import onnxruntime as ort

    contract = pytest.importorskip("hbaf.contract")
    if not hasattr(contract, "asr_engine_graph"):
        pytest.skip("the recogniser's graphs are not in this tree")
    from edge_runtime.trt_runner import EngineRunner
    from export.asr_export import export_asr

    written = export_asr(tmp_path / "asr", precisions=("fp32",))
    onnx_path = written[f"{contract.ASR_ENCODER}.fp32"]
    engine_path, _ = EngineBuilder(onnx_path, "fp16", workspace_mb=2048).build(tmp_path / "engines")
    runner = EngineRunner(engine_path, graph=contract.asr_engine_graph(contract.ASR_ENCODER))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (name,) = runner.input_names
    shape = runner.profile_shapes[name][1]
    mel = np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype(np.float32)
    got = runner.run({name: mel})
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: mel})))
    for key, ref in want.items():
        g64, r64 = got[key].astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        assert g64 @ r64 / (np.linalg.norm(g64) * np.linalg.norm(r64)) > 0.999, key
    runner.close()
