"""ONNX -> TensorRT ``.engine``, built on the device that will run it.

    python -m export.engine --onnx student.int8.onnx --precision int8 --out engines/ \\
        --min 1,16,4 --opt 1,300,32 --max 8,1000,128 --workspace-mb 1024 --timing-cache engines/cache.bin

One builder class (``EngineBuilder``), one job. The engine only runs on the TensorRT version
and GPU that built it, so its name says so — ``<model>.<trt-version>.<gpu>.<precision>.engine``
— and a JSON sidecar (``<engine>.json``) records the ONNX sha256, TensorRT version, GPU name
and compute capability, precision, optimization profile, labels and the exact build command.
The runtime compares the sidecar with the machine and refuses a mismatch with that command.

Precision:

- ``fp32``: weakly typed network, no precision flags, TF32 off (a true FP32 reference).
- ``fp16``: a plain FP32 ONNX on a weakly typed network with ``BuilderFlag.FP16``. We do not
  convert the ONNX to FP16 and build it strongly typed: the flag lets TensorRT keep a layer
  in FP32 where FP16 is not faster or not supported, with one ONNX for every backend.
- ``int8``: explicit quantization only — an ONNX carrying Q/DQ nodes (calibration/, TensorRT
  flavour: symmetric s8). With TensorRT >= 10 the network is *strongly typed* and no
  FP16/INT8 flags are set: each tensor's precision comes from the graph, so GEMMs run in
  INT8 between their Q/DQ pairs and everything the calibration left unquantized (masks,
  Softmax, LayerNorm, GELU, residuals, the gate) stays FP32 exactly as calibrated. TensorRT
  8.x has no strongly typed networks: there the Q/DQ graph is built weakly typed with the
  INT8 and FP16 flags. The implicit calibrators (deprecated in 10.1) are not used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from export.ort_cpu import is_ort_cpu_graph
from export.trt_compat import METADATA_KEY, check_onnx_for_tensorrt, context_dims, has_qdq, load_onnx, read_metadata
from hbaf import __version__ as PACKAGE_VERSION
from hbaf.errors import HBAFError, cli_entry
from hbaf.features import MAX_FRAMES, N_MELS
from hbaf.io import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
MAX_TOKENS = 128  # the export contract's L <= 128
SIDECAR_FORMAT = 1
ENGINE_SUFFIX = ".engine"

TRT_MISSING = (
    "TensorRT is not installed: on Jetson install JetPack's python3-libnvinfer "
    "(sudo apt install python3-libnvinfer) and use the system Python 3.10; "
    "on x86 pip install .[jetson]"
)


# --------------------------------------------------------------------------- profiles


class Dims(NamedTuple):
    """One corner of the optimization profile: batch size, audio frames (10 ms), text tokens."""

    batch: int
    frames: int
    tokens: int


def parse_dims(text: str, what: str = "profile") -> Dims:
    """Parse ``"1,300,32"`` (batch,frames,tokens) into ``Dims``; bad text -> one-line HBAFError."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise HBAFError(f"{what} '{text}' is not three positive integers BATCH,FRAMES,TOKENS; write it like 1,300,32")
    return Dims(*(int(p) for p in parts))


@dataclass(frozen=True)
class Profiles:
    """The one optimization profile: min/opt/max of batch, frames (T) and tokens (L)."""

    min: Dims = Dims(1, 16, 4)
    opt: Dims = Dims(1, 300, 32)
    max: Dims = Dims(8, 1000, 128)

    def __post_init__(self) -> None:
        for corner in ("min", "opt", "max"):
            value = getattr(self, corner)
            if not isinstance(value, Dims):
                value = Dims(*(int(v) for v in value))
                object.__setattr__(self, corner, value)
            if any(v < 1 for v in value):
                raise HBAFError(f"--{corner} {_fmt(value)} has a size below 1; every size must be >= 1")
        for axis in Dims._fields:
            lo, mid, hi = (getattr(getattr(self, c), axis) for c in ("min", "opt", "max"))
            if not lo <= mid <= hi:
                raise HBAFError(f"profile {axis}: need min <= opt <= max, got {lo} / {mid} / {hi}; fix --min/--opt/--max")
        if self.max.frames > MAX_FRAMES:
            raise HBAFError(f"--max frames {self.max.frames} exceeds {MAX_FRAMES} (10 s at a 10 ms hop, the export contract); lower it")
        if self.max.tokens > MAX_TOKENS:
            raise HBAFError(f"--max tokens {self.max.tokens} exceeds {MAX_TOKENS} (the export contract); lower it")

    @classmethod
    def parse(cls, min: str | None = None, opt: str | None = None, max: str | None = None) -> "Profiles":
        """Build from CLI strings; an omitted corner keeps its default."""
        default = cls()
        return cls(
            min=parse_dims(min, "--min") if min else default.min,
            opt=parse_dims(opt, "--opt") if opt else default.opt,
            max=parse_dims(max, "--max") if max else default.max,
        )

    def input_shapes(self, context_size: int, memory_dim: int) -> dict[str, tuple[tuple[int, ...], ...]]:
        """(min, opt, max) shape of every contract input for ``IOptimizationProfile.set_shape``."""

        def shapes(fn) -> tuple[tuple[int, ...], ...]:
            return tuple(fn(d) for d in (self.min, self.opt, self.max))

        k, dim = context_size, memory_dim
        return {
            "audio_feats": shapes(lambda d: (d.batch, d.frames, N_MELS)),
            "audio_mask": shapes(lambda d: (d.batch, d.frames)),
            "input_ids": shapes(lambda d: (d.batch, d.tokens)),
            "attention_mask": shapes(lambda d: (d.batch, d.tokens)),
            "memory": shapes(lambda d: (d.batch, k, dim)),
            "memory_mask": shapes(lambda d: (d.batch, k)),
        }

    def to_dict(self) -> dict[str, list[int]]:
        return {c: list(getattr(self, c)) for c in ("min", "opt", "max")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profiles":
        return cls(**{c: Dims(*data[c]) for c in ("min", "opt", "max")})

    def cli_args(self) -> list[str]:
        return ["--min", _fmt(self.min), "--opt", _fmt(self.opt), "--max", _fmt(self.max)]


def _fmt(d: Dims | tuple[int, ...]) -> str:
    return ",".join(str(v) for v in d)


# --------------------------------------------------------------------------- naming


def sanitize_gpu_name(gpu_name: str) -> str:
    """``"NVIDIA-H100-80GB-HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``, ``"Orin"`` -> ``"orin"`` (no dots, no spaces)."""
    name = re.sub(r"[^a-z0-9_]+", "-", gpu_name.strip().lower()).strip("-")
    return name or "unknown-gpu"


def engine_name(model_stem: str, trt_version: str, gpu_name: str, precision: str) -> str:
    """``<model>.<trt-version>.<gpu>.<precision>.engine``, e.g. ``student.10.3.0.30.orin.int8.engine``."""
    if precision not in PRECISIONS:
        raise HBAFError(f"precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
    if not re.fullmatch(r"\d+(\.\d+)*", trt_version):
        raise HBAFError(f"TensorRT version '{trt_version}' is not like 10.3.0; check the tensorrt install")
    model = re.sub(r"[^A-Za-z0-9_-]+", "-", model_stem).strip("-") or "model"
    return f"{model}.{trt_version}.{sanitize_gpu_name(gpu_name)}.{precision}{ENGINE_SUFFIX}"


_ENGINE_RE = re.compile(r"^(?P<model>[A-Za-z0-9_-]+)\.(?P<trt>\d+(?:\.\d+)*)\.(?P<gpu>[a-z0-9_-]+)\.(?P<precision>fp32|fp16|int8)\.engine$")


def parse_engine_name(name: str) -> dict[str, str] | None:
    """Inverse of ``engine_name`` (model, trt, gpu, precision), or None for another naming."""
    m = _ENGINE_RE.match(Path(name).name)
    return m.groupdict() if m else None


def sidecar_path(engine_path: str | Path) -> Path:
    """The sidecar sits next to the engine: ``<engine>.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


# --------------------------------------------------------------------------- sidecar


@dataclass
class Sidecar:
    """What an engine was built from and where it can run; stored as ``<engine>.json``."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: Profiles
    labels: list[str]
    package_version: str
    built_at: str
    context_size: int
    memory_dim: int
    onnx_path: str = ""
    engine_sha256: str = ""
    engine_bytes: int = 0
    workspace_mb: int = 1024
    strongly_typed: bool = False
    model_version: str = ""
    format: int = SIDECAR_FORMAT

    def to_json(self) -> str:
        data = asdict(self)
        data["profiles"] = self.profiles.to_dict()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "sidecar") -> "Sidecar":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HBAFError(f"{source} is not valid JSON ({err.msg} at line {err.lineno}); rebuild the engine with python -m export.engine") from err
        if not isinstance(data, dict):
            raise HBAFError(f"{source} is not a JSON object; rebuild the engine with python -m export.engine")
        required = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                    "profiles", "labels", "package_version", "built_at", "context_size", "memory_dim")
        missing = [k for k in required if k not in data]
        if missing:
            raise HBAFError(f"{source} lacks {missing}; rebuild the engine with python -m export.engine")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["profiles"] = Profiles.from_dict(data["profiles"])
            kwargs["context_size"] = int(data["context_size"])
            kwargs["memory_dim"] = int(data["memory_dim"])
            kwargs["labels"] = [str(x) for x in data["labels"]]
        except (KeyError, TypeError, ValueError) as err:
            raise HBAFError(f"{source} has a malformed field ({err}); rebuild the engine with python -m export.engine") from err
        if kwargs["precision"] not in PRECISIONS:
            raise HBAFError(f"{source} has precision '{kwargs['precision']}', not one of {'|'.join(PRECISIONS)}; rebuild the engine")
        return cls(**kwargs)

    @classmethod
    def read(cls, path: str | Path) -> "Sidecar":
        path = Path(path)
        return cls.from_json(path.read_text(encoding="utf-8"), source=f"sidecar {path}")

    def build_command(self, out_dir: str | Path | None = None) -> str:
        """The exact command that rebuilds this engine on the machine it is run on."""
        return build_command_for(self.onnx_path or "<model>.onnx", self.precision,
                                 out_dir if out_dir is not None else "engines", self.profiles, self.workspace_mb)


def build_command_for(onnx_path: str, precision: str, out_dir: str | Path, profiles: Profiles, workspace_mb: int) -> str:
    """The shell-quoted ``python -m export.engine`` command line for these settings."""
    args = ["python", "-m", "export.engine", "--onnx", onnx_path, "--precision", precision, "--out", str(out_dir),
            *profiles.cli_args(), "--workspace-mb", str(workspace_mb)]
    return " ".join(shlex.quote(a) for a in args)


def check_engine_compat(
    sidecar: Sidecar,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    *,
    engine_path: str | Path | None = None,
) -> None:
    """Raise ``HBAFError`` (with the rebuild command) unless this machine matches the sidecar.

    A serialized engine is only valid for the exact TensorRT version and GPU model it was
    built with; deserializing elsewhere fails or, worse, runs untuned kernels.
    """
    mismatches = []
    if sidecar.tensorrt_version != trt_version:
        mismatches.append(f"TensorRT {sidecar.tensorrt_version} (this machine has {trt_version})")
    if sanitize_gpu_name(sidecar.gpu_name) != sanitize_gpu_name(gpu_name):
        mismatches.append(f"GPU {sidecar.gpu_name} (this machine has {gpu_name})")
    if str(sidecar.compute_capability) != str(compute_capability):
        mismatches.append(f"compute capability {sidecar.compute_capability} (this machine has {compute_capability})")
    if not mismatches:
        return
    where = Path(engine_path) if engine_path is not None else None
    name = where.name if where is not None else "the engine"
    out_dir = where.parent if where is not None else None
    raise HBAFError(
        f"{name} was built for {', '.join(mismatches)}; engines only run on the TensorRT version and GPU "
        f"that built them: rebuild it on this machine with `{sidecar.build_command(out_dir)}`"
    )


# --------------------------------------------------------------------------- lazy GPU imports


def import_tensorrt():
    """``import tensorrt`` or a one-line HBAFError saying how to install it."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, device-only dependency
    except ImportError as err:
        raise HBAFError(TRT_MISSING) from err
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``device``, via pycuda or torch."""
    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return str(dev.name()), f"{major}.{minor}"
    except ImportError:
        pass
    except Exception as err:  # pycuda present but no usable device
        raise HBAFError(f"CUDA device {device} is not usable ({err}); check the GPU driver and --device") from err
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available() and device < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(device)
            return torch.cuda.get_device_name(device), f"{major}.{minor}"
    except ImportError:
        pass
    raise HBAFError(
        f"no CUDA device {device} found (need pycuda or a CUDA build of torch to query it); "
        "build engines on the Jetson itself: pip install pycuda, or install NVIDIA's Jetson torch wheel"
    )


def _tqdm_progress_monitor(trt):
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per build phase (TensorRT >= 10)."""
    from tqdm import tqdm  # noqa: PLC0415

    class TqdmProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = len(self._bars)
            self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0)

        def step_complete(self, phase_name, step):
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name):
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return TqdmProgressMonitor()


# --------------------------------------------------------------------------- builder


class EngineBuilder:
    """Parse an HBAF ONNX and build a TensorRT engine + sidecar for this GPU."""

    def __init__(
        self,
        onnx_path: str | Path,
        precision: str = "fp16",
        profiles: Profiles | None = None,
        workspace_mb: int = 1024,
        timing_cache: str | Path | None = None,
        verbose: bool = False,
        device: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise HBAFError(f"--precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
        if workspace_mb < 16:
            raise HBAFError(f"--workspace-mb {workspace_mb} is too small; give at least 16 (1024 is a good start)")
        self.onnx_path = Path(onnx_path)
        self.precision = precision
        self.profiles = profiles or Profiles()
        self.workspace_mb = int(workspace_mb)
        self.timing_cache = Path(timing_cache) if timing_cache else None
        self.verbose = verbose
        self.device = device

    # ---- checks that need no TensorRT

    def inspect(self) -> tuple[bytes, dict[str, Any]]:
        """Read and check the ONNX: returns its bytes and what the sidecar needs from it."""
        model = load_onnx(self.onnx_path)
        if is_ort_cpu_graph(model):
            raise HBAFError(f"{self.onnx_path} is the ONNX Runtime CPU graph (com.microsoft operators), which TensorRT cannot "
                            "parse; build the engine from the contract export (model.onnx, or model.int8-trt.onnx for INT8)")
        problems = check_onnx_for_tensorrt(model)
        if problems:
            shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
            raise HBAFError(f"{self.onnx_path} is not ready for TensorRT: {shown}")
        quantized = has_qdq(model)
        if self.precision == "int8" and not quantized:
            raise HBAFError(
                f"{self.onnx_path} has no Q/DQ nodes, and INT8 engines here come from explicit quantization only: "
                "make an INT8 ONNX with the calibration step (TensorRT flavour, symmetric s8) or build --precision fp16"
            )
        if self.precision != "int8" and quantized:
            raise HBAFError(
                f"{self.onnx_path} is quantized (Q/DQ nodes); build it with --precision int8, or use the FP32 ONNX for {self.precision}"
            )
        k, d = context_dims(model)
        meta = read_metadata(model)
        labels = [str(x) for x in meta.get("labels", [])]
        if not labels:
            log.warning("%s carries no labels in ONNX metadata '%s'; the sidecar will list none", self.onnx_path, METADATA_KEY)
        info = {"context_size": k, "memory_dim": d, "labels": labels, "quantized": quantized,
                "model_version": str(meta.get("version") or meta.get("hbaf_version") or "")}
        return self.onnx_path.read_bytes(), info

    # ---- TensorRT

    def _parse(self, trt, builder, onnx_bytes: bytes, strongly_typed: bool):
        flags = 0
        if trt_major(trt) < 10:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, builder.logger)
        if not parser.parse(onnx_bytes, str(self.onnx_path.resolve())):
            errors = []
            for i in range(parser.num_errors):
                err = parser.get_error(i)
                where = ""
                if err.node() >= 0:
                    node = err.node_name() if hasattr(err, "node_name") else ""  # TensorRT >= 9.1
                    op = err.node_operator() if hasattr(err, "node_operator") else ""
                    where = f"node {node or err.node()}{f' ({op})' if op else ''}: "
                errors.append(f"{where}{err.desc()}")
            raise HBAFError(
                f"TensorRT {trt.__version__} could not parse {self.onnx_path} ({len(errors)} error(s)): "
                + " | ".join(errors)
                + "; fix those nodes in the PyTorch model and export the ONNX again (opset 17)"
            )
        return network, parser

    def _load_timing_cache(self, config) -> None:
        data = b""
        if self.timing_cache is not None and self.timing_cache.is_file():
            data = self.timing_cache.read_bytes()
            log.info("timing cache: %s (%d bytes)", self.timing_cache, len(data))
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("timing cache %s does not fit this GPU/TensorRT; starting a fresh one", self.timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)

    def _save_timing_cache(self, config) -> None:
        if self.timing_cache is None:
            return
        data = config.get_timing_cache().serialize()
        write_bytes_atomic(self.timing_cache, memoryview(data).tobytes())
        log.info("timing cache saved: %s", self.timing_cache)

    def build(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Build and write ``(engine_path, sidecar_path)`` into ``out_dir``."""
        onnx_bytes, info = self.inspect()
        trt = import_tensorrt()
        gpu_name, cc = gpu_info(self.device)
        strongly_typed = info["quantized"] and trt_major(trt) >= 10

        logger = trt.Logger(trt.Logger.VERBOSE if self.verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = self._parse(trt, builder, onnx_bytes, strongly_typed)  # the parser owns weights the network uses: keep it alive

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)
        elif self.precision == "fp16":
            if not builder.platform_has_fast_fp16:
                log.warning("this GPU has no fast FP16; the fp16 engine may not be faster than fp32")
            config.set_flag(trt.BuilderFlag.FP16)
        elif not strongly_typed:  # int8 on TensorRT 8.x: Q/DQ graph, weakly typed
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)

        profile = builder.create_optimization_profile()
        shapes = self.profiles.input_shapes(info["context_size"], info["memory_dim"])
        network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        for name, (lo, mid, hi) in shapes.items():
            if name in network_inputs:
                profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(profile)
        self._load_timing_cache(config)
        if hasattr(trt, "IProgressMonitor"):
            config.progress_monitor = _tqdm_progress_monitor(trt)

        log.info("building %s engine from %s on %s (sm %s, TensorRT %s, %s)", self.precision, self.onnx_path,
                 gpu_name, cc, trt.__version__, "strongly typed" if strongly_typed else "weakly typed")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise HBAFError(
                f"TensorRT could not build an engine from {self.onnx_path} (see the TensorRT log above, or rerun with --verbose); "
                "try a larger --workspace-mb or a smaller --max profile"
            )
        self._save_timing_cache(config)

        engine_bytes = memoryview(serialized).tobytes()
        out_dir = Path(out_dir)
        engine_path = out_dir / engine_name(self.onnx_path.stem, str(trt.__version__), gpu_name, self.precision)
        write_bytes_atomic(engine_path, engine_bytes)
        sidecar = Sidecar(
            onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu_name,
            compute_capability=cc,
            precision=self.precision,
            profiles=self.profiles,
            labels=info["labels"],
            package_version=PACKAGE_VERSION,
            built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            context_size=info["context_size"],
            memory_dim=info["memory_dim"],
            onnx_path=str(self.onnx_path.resolve()),
            engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
            engine_bytes=len(engine_bytes),
            workspace_mb=self.workspace_mb,
            strongly_typed=strongly_typed,
            model_version=info["model_version"],
        )
        side = sidecar_path(engine_path)
        write_text_atomic(side, sidecar.to_json())
        log.info("wrote %s (%.1f MB) and %s", engine_path, len(engine_bytes) / 1e6, side)
        return engine_path, side


# --------------------------------------------------------------------------- CLI


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises HBAFError (one line, exit 2 via cli_entry) instead of printing usage."""

    def error(self, message: str) -> None:
        raise HBAFError(f"{message}; see python -m export.engine --help")


def build_arg_parser() -> argparse.ArgumentParser:
    default = Profiles()
    p = _ArgumentParser(prog="python -m export.engine", description="Build a TensorRT engine from an HBAF ONNX on this device.")
    p.add_argument("--onnx", required=True, help="ONNX model (the export contract; Q/DQ for int8)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="fp16 (default), fp32, or int8 (needs a Q/DQ ONNX from calibration)")
    p.add_argument("--out", default="engines", help="output folder for <model>.<trt>.<gpu>.<precision>.engine and its .json sidecar")
    p.add_argument("--min", default=_fmt(default.min), help="min BATCH,FRAMES,TOKENS (default %(default)s)")
    p.add_argument("--opt", default=_fmt(default.opt), help="opt BATCH,FRAMES,TOKENS (default %(default)s)")
    p.add_argument("--max", default=_fmt(default.max), help=f"max BATCH,FRAMES,TOKENS (FRAMES <= {MAX_FRAMES}, TOKENS <= {MAX_TOKENS}; default %(default)s)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit in MiB (default %(default)s)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read if present and saved after the build")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="verbose TensorRT log")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    profiles = Profiles.parse(args.min, args.opt, args.max)
    builder = EngineBuilder(args.onnx, args.precision, profiles, workspace_mb=args.workspace_mb,
                            timing_cache=args.timing_cache, verbose=args.verbose, device=args.device)
    engine_path, side = builder.build(args.out)
    print(engine_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
