"""The TensorRT fusion backend: a ``.engine`` + its sidecar -> probs, utt_emb, gate.

Everything that can be checked without a GPU is checked first (file present and non-empty,
sidecar present and valid, engine bytes matching the sidecar's size and sha256), then the
running TensorRT version and GPU are compared with the sidecar, and only then is the engine
deserialized. Every refusal is one line with the command that rebuilds the engine here.

I/O buffers are allocated once for the profile's max shapes: pinned host + device memory
through pycuda, or through torch CUDA tensors when pycuda is missing. A call sets the
input shapes, copies host->device on one stream, runs ``execute_async_v3``, copies the
outputs back and synchronizes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, resolve_tokenizer
from hbaf.contract import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Profiles,
    Sidecar,
    build_command_for,
    check_engine_compat,
    check_outputs,
    parse_engine_name,
    sidecar_path,
)
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

TRT_MISSING = (
    "TensorRT is not installed: on Jetson install JetPack's python3-libnvinfer "
    "(sudo apt install python3-libnvinfer) and use the system Python 3.10; "
    "on x86 pip install .[jetson]"
)


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


def read_engine(engine_path: str | Path) -> tuple[bytes, Sidecar]:
    """Read the engine and check it against its sidecar, without TensorRT; return (engine bytes, sidecar)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise HBAFError(f"engine {engine_path} does not exist; build it on this device with hbaf-export engine --onnx <model>.onnx --out {engine_path.parent}")
    size = engine_path.stat().st_size
    if size == 0:
        raise HBAFError(f"engine {engine_path} is empty (an interrupted copy or build?); rebuild it with hbaf-export engine")
    side = sidecar_path(engine_path)
    if not side.is_file():
        parts = parse_engine_name(engine_path.name)
        model = parts["model"] if parts else "<model>"
        precision = parts["precision"] if parts else "fp16"
        cmd = build_command_for(f"{model}.onnx", precision, engine_path.parent, Profiles(), 1024)
        raise HBAFError(f"engine {engine_path} has no sidecar {side.name} (it records where the engine may run); rebuild with `{cmd}`")
    sidecar = Sidecar.read(side)
    rebuild = sidecar.build_command(engine_path.parent)
    if sidecar.engine_bytes and size != sidecar.engine_bytes:
        raise HBAFError(
            f"engine {engine_path} is {size} bytes but its sidecar says {sidecar.engine_bytes}: truncated or replaced; rebuild with `{rebuild}`"
        )
    data = engine_path.read_bytes()
    if sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
        raise HBAFError(f"engine {engine_path} does not match its sidecar (sha256 differs): corrupted or foreign; rebuild with `{rebuild}`")
    return data, sidecar


class _PycudaBuffers:
    """Pinned host + device buffers and one stream, through pycuda's driver API."""

    def __init__(self, device: int) -> None:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()  # the context the CUDA runtime (TensorRT) uses
        self._ctx.push()
        try:
            self.stream = cuda.Stream()
        finally:
            self._ctx.pop()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}

    def allocate(self, name: str, count: int, dtype: np.dtype) -> int:
        self._ctx.push()
        try:
            self.host[name] = self._cuda.pagelocked_empty(count, dtype)
            self.device[name] = self._cuda.mem_alloc(max(1, count * np.dtype(dtype).itemsize))
        finally:
            self._ctx.pop()
        return int(self.device[name])

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def enter(self) -> None:
        self._ctx.push()

    def exit(self) -> None:
        self._ctx.pop()

    def to_device(self, name: str, array: np.ndarray) -> None:
        host = self.host[name][: array.size]
        host[...] = array.reshape(-1)
        self._cuda.memcpy_htod_async(self.device[name], host, self.stream)

    def to_host(self, name: str, count: int) -> np.ndarray:
        host = self.host[name][:count]
        self._cuda.memcpy_dtoh_async(host, self.device[name], self.stream)
        return host

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._ctx.push()
        try:
            for mem in self.device.values():
                mem.free()
        finally:
            self._ctx.pop()
        self.device.clear()
        self.host.clear()
        self._ctx.detach()


class _TorchBuffers:
    """The same buffers as torch tensors (pinned CPU + CUDA) on a torch CUDA stream."""

    def __init__(self, device: int) -> None:
        import torch  # noqa: PLC0415

        self._torch = torch
        self._device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(device=self._device)
        self.host: dict[str, Any] = {}
        self.device: dict[str, Any] = {}

    def allocate(self, name: str, count: int, dtype: np.dtype) -> int:
        torch_dtype = self._torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        n = max(1, count)
        self.host[name] = self._torch.empty(n, dtype=torch_dtype, pin_memory=True)
        self.device[name] = self._torch.empty(n, dtype=torch_dtype, device=self._device)
        return int(self.device[name].data_ptr())

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def enter(self) -> None:
        self._torch.cuda.set_device(self._device)

    def exit(self) -> None:
        pass

    def to_device(self, name: str, array: np.ndarray) -> None:
        host = self.host[name][: array.size]
        host.numpy()[...] = array.reshape(-1)
        with self._torch.cuda.stream(self.stream):
            self.device[name][: array.size].copy_(host, non_blocking=True)

    def to_host(self, name: str, count: int) -> np.ndarray:
        host = self.host[name][:count]
        with self._torch.cuda.stream(self.stream):
            host.copy_(self.device[name][:count], non_blocking=True)
        return host.numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.device.clear()
        self.host.clear()


def _make_buffers(device: int):
    try:
        return _PycudaBuffers(device)
    except ImportError:
        pass
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            log.info("pycuda is not installed; using torch CUDA tensors as TensorRT I/O buffers")
            return _TorchBuffers(device)
    except ImportError:
        pass
    raise HBAFError("the TensorRT backend needs pycuda (pip install pycuda) or a CUDA build of torch (NVIDIA's Jetson wheel) for GPU buffers")


class TensorRTBackend(Backend):
    """A TensorRT engine built by ``hbaf-export engine``, checked against its sidecar and this machine."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, device: int = 0) -> None:
        t0 = time.perf_counter()
        engine_path = Path(engine_path)
        engine_bytes, self.sidecar = read_engine(engine_path)
        super().__init__(engine_path, self.sidecar.model)
        self.precision = self.sidecar.precision
        profiles = self.sidecar.profiles
        self.min_frames, self.max_frames = profiles.min.frames, min(profiles.max.frames, self.spec.max_frames)
        self.min_tokens, self.token_limit = profiles.min.tokens, profiles.max.tokens
        self.max_batch = profiles.max.batch
        rebuild = self.sidecar.build_command(self.path.parent)

        trt = import_tensorrt()
        gpu_name, cc = gpu_info(device)
        check_engine_compat(self.sidecar, str(trt.__version__), gpu_name, cc, engine_path=self.path)

        self._buffers = _make_buffers(device)
        self._lock = threading.Lock()
        self._buffers.enter()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self._engine is None:
                raise HBAFError(f"TensorRT could not deserialize {self.path}: truncated or foreign engine; rebuild with `{rebuild}`")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise HBAFError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?); close other GPU programs or rebuild with a smaller --max")
            self._setup_io(trt, rebuild)
        finally:
            self._buffers.exit()
        onnx_path = self.sidecar.onnx_path
        self.tokenizer_file = resolve_tokenizer(self.path, {"onnx_path": onnx_path} if onnx_path else {}, self.spec)
        self.load_seconds = time.perf_counter() - t0

    def _setup_io(self, trt, rebuild: str) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise HBAFError(f"{self.path} has I/O {inputs} -> {outputs}, not the HBAF contract; rebuild it from an exported HBAF ONNX with `{rebuild}`")
        self._inputs, self._outputs = inputs, outputs
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._profile = {n: tuple(tuple(int(v) for v in s) for s in engine.get_tensor_profile_shape(n, 0)) for n in inputs}
        for n in inputs:  # max shapes give every output its largest size
            self._context.set_input_shape(n, self._profile[n][2])
        for n in names:
            shape = self._profile[n][2] if n in inputs else tuple(int(v) for v in self._context.get_tensor_shape(n))
            if any(v < 0 for v in shape):
                raise HBAFError(f"{self.path}: output '{n}' has no bounded shape {shape}; rebuild with `{rebuild}`")
            ptr = self._buffers.allocate(n, int(np.prod(shape)), self._dtypes[n])
            self._context.set_tensor_address(n, ptr)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through the engine: inputs cast to the engine's dtypes, outputs as new numpy arrays."""
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise HBAFError(f"TensorRT backend: inputs {missing} are missing; pass all of {list(INPUT_NAMES)}")
        arrays = {}
        for n in self._inputs:
            a = np.ascontiguousarray(feeds[n], dtype=self._dtypes[n])
            lo, _, hi = self._profile[n]
            if a.ndim != len(hi) or any(not (lo[i] <= a.shape[i] <= hi[i]) for i in range(a.ndim)):
                raise HBAFError(
                    f"input '{n}' has shape {a.shape}, outside the engine profile {lo}..{hi}; "
                    "cut the audio/text to fit or rebuild the engine with a larger --max"
                )
            arrays[n] = a
        with self._lock:
            self._buffers.enter()
            try:
                for n, a in arrays.items():
                    if not self._context.set_input_shape(n, a.shape):
                        raise HBAFError(f"TensorRT rejected shape {a.shape} for input '{n}'; check the batch size agrees across inputs")
                    self._buffers.to_device(n, a)
                shapes = {n: tuple(int(v) for v in self._context.get_tensor_shape(n)) for n in self._outputs}
                if not self._context.execute_async_v3(self._buffers.stream_handle):
                    raise HBAFError(f"TensorRT failed to run {self.path.name} (see the log above); rebuild the engine if this persists")
                hosts = {n: self._buffers.to_host(n, int(np.prod(s))) for n, s in shapes.items()}
                self._buffers.synchronize()
            finally:
                self._buffers.exit()
            out = {n: np.array(hosts[n]).reshape(shapes[n]) for n in self._outputs}
        return check_outputs(out, str(self.path))

    def close(self) -> None:
        """Free GPU buffers and TensorRT objects (also done at interpreter exit)."""
        self._context = None
        self._engine = None
        self._buffers.close()
