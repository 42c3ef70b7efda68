"""`hbaf-edge doctor`: the checks are pure functions of a machine's facts, so machines that are not
here (a Jetson Orin Nano on JetPack 6.2, one on JetPack 5, an x86 box) are given as facts: the
text of /etc/nv_tegra_release, the board model, package versions, what torch.from_numpy raised.
The command itself runs here once, on this machine's real facts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime.doctor import (
    CPU,
    MISSING,
    OK,
    TENSORRT,
    TORCH_TRT,
    WRONG,
    Facts,
    check_engines,
    choose_path,
    exit_code,
    format_report,
    report_json,
    run_checks,
)
from hbaf.contract import ModelSpec, Profiles, Sidecar, sidecar_path

REPO = Path(__file__).resolve().parents[1]
JP62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
JP61 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
JP512 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
NANO = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00"
AGX = "NVIDIA Jetson AGX Orin Developer Kit"
NV_TORCH = "2.5.0a0+872d972e41.nv24.08"
MODELS = {"student": "/x/student", "default.onnx": "/x/default.onnx", "whisper": "/x/whisper", "silero vad": "/x/vad.onnx",
          "text encoder": "/x/minilm"}


def orin_nano(**over) -> Facts:
    """An Orin Nano on JetPack 6.2 with everything the tensorrt path needs."""
    base = Facts(python="3.10.12", executable="/home/me/hbaf-edge/.venv/bin/python", venv=True, system_site_packages=True,
                 machine="aarch64", tegra_release=JP62, board=NANO, numpy="1.26.4", torch=NV_TORCH, torch_cuda="12.6",
                 torch_cuda_available=True, tensorrt="10.3.0", pycuda="2024.1.2", onnxruntime="1.20.1",
                 onnxruntime_providers=["CPUExecutionProvider"], ctranslate2="4.5.0", faster_whisper="1.1.0",
                 gpu={"name": "Orin", "compute_capability": "8.7", "total_memory": 8 * 2**30, "via": "pycuda"},
                 audio_inputs=["USB PnP Sound Device: Audio (hw:0,0)"], models=dict(MODELS))
    return replace(base, **over)


def x86(**over) -> Facts:
    base = Facts(python="3.11.2", executable="/srv/hbaf-edge/.venv/bin/python", venv=True, system_site_packages=False,
                 machine="x86_64", numpy="2.1.3", torch="2.6.0+cpu", onnxruntime="1.20.1",
                 onnxruntime_providers=["CPUExecutionProvider"], ctranslate2="4.5.0", faster_whisper="1.1.0",
                 gpu_error="no CUDA device 0 found", audio_inputs=[], models=dict(MODELS))
    return replace(base, **over)


def line(facts: Facts, name: str):
    return next(c for c in run_checks(facts) if c.name == name)


def test_a_ready_orin_nano_passes_the_tensorrt_path():
    facts = orin_nano()
    checks = run_checks(facts)
    assert choose_path(facts) == TENSORRT
    blocking = [c.name for c in checks if c.status != OK and TENSORRT in c.needed_for]
    assert blocking == [] and exit_code(checks, TENSORRT) == 0
    assert line(facts, "jetpack").detail == "JetPack 6.2 (Jetson Linux R36.4.3)"
    assert line(facts, "board").detail == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert "Orin, compute capability 8.7, 8.0 GiB, shared with the CPU" in line(facts, "gpu").detail
    assert "aarch64 wheels are CPU-only" in line(facts, "recogniser").detail  # --asr-device cuda is not offered here
    assert line(facts, "jetpack").status == OK and line(replace(facts, tegra_release=JP61), "jetpack").detail.startswith("JetPack 6.1")
    report = format_report(checks, TENSORRT)
    assert report.splitlines()[-1] == "everything the tensorrt path needs is here"


def test_numpy_2_under_nvidias_torch_is_wrong_with_the_pin():
    """pip put numpy 2.x into the venv; NVIDIA's JetPack torch is built against numpy 1.x."""
    facts = orin_nano(numpy="2.1.3", torch_numpy_error="Numpy is not available")
    c = line(facts, "numpy")
    assert c.status == WRONG and "torch.from_numpy: Numpy is not available" in c.detail
    assert c.fix == '/home/me/hbaf-edge/.venv/bin/python -m pip install "numpy>=1.24,<2"'
    assert exit_code(run_checks(facts), CPU) == 1 and exit_code(run_checks(facts), TENSORRT) == 1
    assert line(orin_nano(numpy="2.0.2"), "numpy").status == OK  # a torch that takes numpy 2 (the probe passed) is fine
    assert line(x86(), "numpy").status == OK  # numpy 2 with a PyPI torch built for it


def test_tensorrt_versions():
    assert line(orin_nano(tensorrt="11.0.0"), "tensorrt").status == WRONG
    assert "removes the FP16/INT8 builder flags" in line(orin_nano(tensorrt="11.0.0"), "tensorrt").detail
    assert line(orin_nano(tensorrt="8.6.2"), "tensorrt").status == WRONG
    missing = line(orin_nano(tensorrt=None, tensorrt_error="No module named 'tensorrt'"), "tensorrt")
    assert missing.status == MISSING and missing.detail == "not installed"
    assert missing.fix.startswith("sudo apt-get install -y python3-libnvinfer python3-libnvinfer-dev")
    assert line(x86(), "tensorrt").fix == "/srv/hbaf-edge/.venv/bin/python -m pip install 'tensorrt>=10.3,<11' (x86 with an NVIDIA GPU)"
    # TensorRT is not needed for the cpu path: an x86 box without it passes that path and fails the tensorrt one
    assert exit_code(run_checks(x86()), CPU) == 0 and exit_code(run_checks(x86()), TENSORRT) == 1


def test_jetpack_5_is_wrong_and_says_why():
    facts = orin_nano(tegra_release=JP512, python="3.8.10", tensorrt="8.5.2.2")
    jp = line(facts, "jetpack")
    assert jp.status == WRONG and "TensorRT 8.5 and Python 3.8" in jp.detail and "JetPack 6.1/6.2" in jp.fix
    assert line(facts, "python").status == WRONG
    assert exit_code(run_checks(facts), TENSORRT) == 1


def test_jetson_venv_must_see_the_system_site_packages():
    c = line(orin_nano(system_site_packages=False), "venv")
    assert c.status == WRONG and "include-system-site-packages = true" in c.fix and TENSORRT in c.needed_for
    assert line(x86(system_site_packages=False), "venv").status == OK
    assert line(orin_nano(python="3.11.9"), "python").status == WRONG  # JetPack's bindings are for 3.10


def test_torch_paths_on_a_jetson():
    cpu_torch = orin_nano(torch="2.6.0", torch_cuda=None, torch_cuda_available=False)
    c = line(cpu_torch, "torch")
    assert c.status == WRONG and c.needed_for == frozenset({TORCH_TRT}) and "libopenblas-dev" in c.fix
    assert exit_code(run_checks(cpu_torch), TENSORRT) == 0  # pycuda buffers: the engines do not need CUDA torch
    old = line(orin_nano(torch_tensorrt="2.5.0"), "torch")  # JetPack 6.1's wheel is 2.5: no dynamic-frame export
    assert old.status == WRONG and "torch >= 2.7" in old.detail and "hbaf-export engine" in old.fix
    assert exit_code(run_checks(orin_nano(torch_tensorrt="2.5.0")), TORCH_TRT) == 1
    missing = line(orin_nano(torch=None, torch_error="libcusparseLt.so.0: cannot open shared object file"), "torch")
    assert missing.status == MISSING and "libcusparseLt.so.0" in missing.detail and "cuSPARSELt" in missing.fix


def test_gpu_buffers_fall_back_to_torch():
    assert line(orin_nano(pycuda=None), "cuda buffers").status == OK
    c = line(orin_nano(pycuda=None, torch_cuda=None, torch_cuda_available=False), "cuda buffers")
    assert c.status == MISSING and c.fix == ("sudo apt-get install -y python3-dev && export PATH=/usr/local/cuda/bin:$PATH && "
                                             "/home/me/hbaf-edge/.venv/bin/python -m pip install pycuda")


def test_models_and_audio():
    facts = orin_nano(models={**MODELS, "whisper": ""}, model_errors={"whisper": "the bundled Whisper tiny.en is not installed"},
                      audio_inputs=[])
    assert line(facts, "model whisper").status == MISSING and exit_code(run_checks(facts), CPU) == 1
    audio = line(facts, "audio input")
    assert audio.status == MISSING and audio.needed_for == frozenset()  # files and demo work without a microphone


def _engine(tmp_path: Path, board: str, l4t: str) -> Path:
    payload = b"\x11" * 256
    engine = tmp_path / "student.10.3.0.orin.int8.engine"
    engine.write_bytes(payload)
    side = Sidecar(model=ModelSpec(labels=("neutral", "joy"), context_size=4, memory_dim=8), profiles=Profiles(),
                   onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                   precision="int8", package_version="0.1.0", built_at="2026-01-02T00:00:00+00:00",
                   onnx_path="/opt/m/student.int8-trt.onnx", engine_bytes=len(payload),
                   engine_sha256=hashlib.sha256(payload).hexdigest(), board=board, l4t_release=l4t)
    sidecar_path(engine).write_text(side.to_json())
    return engine


def test_engines_built_on_another_orin_are_wrong(tmp_path):
    from edge_runtime.doctor import _engine_facts

    _engine(tmp_path, AGX, "36.4.3")
    facts = orin_nano()
    _engine_facts(facts, tmp_path)  # reads the files; the check is against the facts
    (c,) = check_engines(facts)
    assert c.status == WRONG and c.name == "engine: student.10.3.0.orin.int8.engine"
    assert f"board {AGX} (this machine is NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super)" in c.detail
    assert c.fix.startswith("hbaf-export engine --onnx /opt/m/student.int8-trt.onnx --precision int8 --out ")
    assert exit_code(run_checks(facts), TENSORRT) == 1
    on_agx = replace(facts, board=AGX)
    assert check_engines(on_agx)[0].status == OK and exit_code(run_checks(on_agx), TENSORRT) == 0
    assert check_engines(replace(facts, tensorrt=None))[0].status == MISSING  # nothing to compare with

    (tmp_path / "student.10.3.0.orin.int8.engine").write_bytes(b"\x11" * 100)  # truncated copy
    cut = orin_nano()
    _engine_facts(cut, tmp_path)
    (c,) = check_engines(cut)
    assert c.status == WRONG and "truncated or replaced" in c.detail and c.fix.startswith("hbaf-export engine --onnx")

    (tmp_path / "none").mkdir()
    empty = orin_nano()
    _engine_facts(empty, tmp_path / "none")
    assert [c.status for c in check_engines(empty)] == [MISSING]


def test_engines_of_any_graph_are_checked(tmp_path):
    """A recogniser engine (no fusion model spec, a profile by tensor name) is read and checked like the fusion one."""
    from edge_runtime.doctor import _engine_facts
    from hbaf.contract import ShapeProfile

    payload = b"\x22" * 128
    engine = tmp_path / "whisper-tiny-en-encoder-fp32.10.3.0.orin.fp16.engine"
    engine.write_bytes(payload)
    side = Sidecar(graph="whisper-encoder", shapes=ShapeProfile.parse(["mel:1x80x1000:1x80x1000:4x80x1000"]),
                   onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                   precision="fp16", package_version="0.1.0", built_at="2026-01-02T00:00:00+00:00",
                   engine_bytes=len(payload), engine_sha256=hashlib.sha256(payload).hexdigest(),
                   board="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", l4t_release="36.4.3")
    sidecar_path(engine).write_text(side.to_json())
    facts = orin_nano()
    _engine_facts(facts, tmp_path)
    (c,) = check_engines(facts)
    assert c.status == OK and c.detail.startswith("whisper-encoder fp16, built 2026-01-02 on Orin")
    (c,) = check_engines(replace(facts, tegra_release=JP61))
    assert c.status == WRONG and "Jetson Linux R36.4.3 (this machine has R36.4.0)" in c.detail
    assert "--shape mel:1x80x1000:1x80x1000:4x80x1000" in c.fix


def test_json_says_the_same(tmp_path):
    facts = orin_nano(tensorrt=None)
    checks = run_checks(facts)
    data = json.loads(json.dumps(report_json(checks, TENSORRT, facts)))
    assert data["exit"] == 1 and data["path"] == "tensorrt"
    trt = next(c for c in data["checks"] if c["name"] == "tensorrt")
    assert trt["status"] == "missing" and trt["needed"] is True and trt["fix"].startswith("sudo apt-get install")
    assert data["facts"]["tegra_release"] == JP62
    text = format_report(checks, TENSORRT)
    assert "  missing  tensorrt" in text and text.splitlines()[-1].startswith("the tensorrt path needs 1 more: tensorrt (exit 1)")


def test_doctor_on_this_machine():
    """The real command on this machine: the cpu path's exit code follows its own lines, and --json agrees."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(Path.home())}

    def hbaf_edge(*args: str) -> subprocess.CompletedProcess:
        code = "import sys; from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    text = hbaf_edge("doctor", "--path", "cpu")
    assert text.stdout.startswith("hbaf-edge doctor: the cpu path\n") and "Traceback" not in text.stderr, text.stderr
    as_json = hbaf_edge("doctor", "--path", "cpu", "--json")
    data = json.loads(as_json.stdout)
    blocking = [c["name"] for c in data["checks"] if c["needed"] and c["status"] != "ok"]
    assert as_json.returncode == text.returncode == data["exit"] == (1 if blocking else 0), blocking
    bad = hbaf_edge("doctor", "--engines", "/nonexistent")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --engines /nonexistent is not a folder; pass the folder `hbaf-export engine --out` wrote")


def test_asr_device_cuda_without_a_cuda_ctranslate2_is_one_line():
    """A stock Jetson install: CTranslate2's aarch64 wheels are CPU-only, so --asr-device cuda must say what to do."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this CTranslate2 sees a CUDA device")
    from edge_runtime.asr import WhisperASR
    from hbaf.errors import HBAFError

    with pytest.raises(HBAFError) as info:
        WhisperASR(device="cuda")
    msg = str(info.value)
    assert msg.startswith("--asr-device cuda: this CTranslate2") and "aarch64" in msg and "use --asr-device cpu" in msg
    assert "\n" not in msg


def _asr_engine(folder: Path, role: str, onnx: Path, board: str = NANO.rstrip("\x00")) -> Path:
    """A recogniser engine named and sidecar'd as an Orin Nano build of `hbaf-export all` leaves it."""
    from hbaf.contract import ShapeProfile, asr_engine_graph

    payload = role.encode() * 32
    engine = folder / f"whisper-tiny-en-{role}-fp32.10.3.0.orin.fp16.engine"
    engine.write_bytes(payload)
    side = Sidecar(graph=asr_engine_graph(role), shapes=ShapeProfile.parse(["mel:1x80x1000:1x80x1000:4x80x1000"]),
                   onnx_sha256=hashlib.sha256(onnx.read_bytes()).hexdigest(), onnx_path=str(onnx), tensorrt_version="10.3.0",
                   gpu_name="Orin", compute_capability="8.7", precision="fp16", package_version="0.1.0",
                   built_at="2026-01-02T00:00:00+00:00", engine_bytes=len(payload),
                   engine_sha256=hashlib.sha256(payload).hexdigest(), board=board, l4t_release="36.4.3")
    sidecar_path(engine).write_text(side.to_json())
    return engine


def test_the_recogniser_line_says_which_form_run_uses_by_default(tmp_path, monkeypatch):
    """Engines built for this Orin Nano -> them; stale -> CTranslate2 with the reason; none -> the command that builds them."""
    from edge_runtime.doctor import _engine_facts, _recogniser_facts

    monkeypatch.setenv("HBAF_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    engines = tmp_path / "engines"
    engines.mkdir()
    onnx = tmp_path / "graph.onnx"
    onnx.write_bytes(b"an exported graph")
    for role in ("encoder", "decoder-first", "decoder-step"):
        _asr_engine(engines, role, onnx)
    facts = orin_nano()
    _engine_facts(facts, engines)  # --engines engines/: each engine's own line, and the folder searched
    _recogniser_facts(facts)
    c = line(facts, "recogniser")
    assert c.status == OK and c.detail.startswith("by default the TensorRT engines on the GPU, built for this machine: encoder ")
    assert "whisper-tiny-en-encoder-fp32.10.3.0.orin.fp16.engine" in c.detail and "decoder-step" in c.detail
    assert exit_code(run_checks(facts), TENSORRT) == 0

    onnx.write_bytes(b"exported again")  # the engines are stale now
    stale = orin_nano()
    _engine_facts(stale, engines)
    _recogniser_facts(stale)
    c = line(stale, "recogniser")
    assert c.status == WRONG and c.detail.startswith("by default CTranslate2 4.5.0: its aarch64 wheels are CPU-only")
    assert "is stale" in c.detail and c.fix == f"hbaf-export asr --out {tmp_path / 'asr'} --engines {engines}"
    assert line(stale, "recogniser").needed_for == frozenset()  # recognition still works, on the CPU

    bare = orin_nano()  # TensorRT and a GPU, no recogniser engines anywhere
    _recogniser_facts(bare)
    c = line(bare, "recogniser")
    assert c.status == MISSING and "TensorRT and a GPU are here but no recogniser engines" in c.detail
    assert c.fix == "hbaf-export asr --out hbaf-models/asr --engines hbaf-models/engines"
    assert "(not needed for the tensorrt path)" in format_report(run_checks(bare), TENSORRT)

    plain = x86()  # no TensorRT: CTranslate2 on the CPU, nothing to fix
    _recogniser_facts(plain)
    c = line(plain, "recogniser")
    assert c.status == OK and c.detail == "by default CTranslate2 4.5.0 on the CPU (int8)"
