"""One TensorRT engine runner for every graph: the fusion model, the recogniser's encoder and decoder.

``EngineRunner(path)`` knows nothing of any graph's tensors. It learns the names, dtypes and
optimization profile from the engine itself and checks them against the engine's sidecar
(``hbaf.contract.Sidecar``); a graph's own class (the fusion backend in
``edge_runtime.trt_backend``, the recogniser's engines) says which names it needs.

Loading, in this order, every refusal one line with the command that rebuilds the engine here:

1. without TensorRT: the file is there and not empty; the sidecar is there, valid and of the
   expected graph; the engine's size and sha256 match the sidecar; the ONNX it was built from,
   when still at its recorded path, has the recorded sha256 (else the engine is stale);
2. with TensorRT: this machine's TensorRT version, GPU name and compute capability, and on a
   Jetson the board and the Jetson Linux release, match the sidecar's;
3. the engine is deserialized on ``device`` (made the current CUDA device first), its I/O
   buffers are allocated once for the profile's max shapes: pinned host + device memory through
   pycuda, or torch CUDA tensors where pycuda is missing; one CUDA stream per runner.

A call checks every input against the profile, sets the input shapes, copies host -> device on
the stream, runs ``execute_async_v3``, copies the outputs back and synchronizes; calls are
serialized by a lock. ``close()`` frees the GPU memory and the TensorRT objects; so does a
failure half way through loading, and interpreter exit (``weakref.finalize``) for a runner
nobody closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.jetson import jetson_facts
from hbaf.contract import (
    GRAPH_FUSION,
    Sidecar,
    build_command_for,
    check_engine_compat,
    parse_engine_name,
    sidecar_path,
)
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

TRT_MISSING = (
    "TensorRT is not installed: on Jetson install JetPack's python3-libnvinfer "
    "(sudo apt install python3-libnvinfer) and use the system Python 3.10 (a venv made with --system-site-packages); "
    "on x86 pip install .[jetson]"
)
TRT_SUPPORTED_MAJOR = 10  # the builder's precision flags are TensorRT 10's; 11 removes the FP16/INT8 builder flags


def import_tensorrt():
    """``import tensorrt`` or a one-line HBAFError saying how to install it."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, device-only dependency
    except ImportError as err:
        raise HBAFError(TRT_MISSING) from err
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class GpuInfo:
    """What the engine checks and ``hbaf-edge doctor`` report about one CUDA device."""

    name: str
    compute_capability: str  # "major.minor"
    total_memory: int  # bytes (on a Jetson: the memory the CPU and GPU share)
    via: str  # pycuda | torch


def gpu_facts(device: int = 0) -> GpuInfo:
    """Name, compute capability and memory of CUDA device ``device``, via pycuda or torch."""
    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return GpuInfo(str(dev.name()), f"{major}.{minor}", int(dev.total_memory()), "pycuda")
    except ImportError:
        pass
    except Exception as err:  # pycuda present but no usable device
        raise HBAFError(f"CUDA device {device} is not usable ({err}); check the GPU driver and --device") from err
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available() and device < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(device)
            return GpuInfo(str(props.name), f"{props.major}.{props.minor}", int(props.total_memory), "torch")
    except ImportError:
        pass
    raise HBAFError(
        f"no CUDA device {device} found (need pycuda or a CUDA build of torch to query it); "
        "build engines on the Jetson itself: pip install pycuda, or install NVIDIA's Jetson torch wheel"
    )


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``device``."""
    info = gpu_facts(device)
    return info.name, info.compute_capability


@contextlib.contextmanager
def on_device(device: int) -> Iterator[None]:
    """Make CUDA device ``device`` the current one for the CUDA runtime (which TensorRT's builder
    and runtime use) while the block runs: pycuda pushes the device's primary context (the one
    the runtime uses), else torch selects the device; device 0 needs neither."""
    try:
        import pycuda.driver as cuda  # noqa: PLC0415
    except ImportError:
        cuda = None
    if cuda is not None:
        cuda.init()
        if not 0 <= device < cuda.Device.count():
            raise HBAFError(f"--device {device}: this machine has {cuda.Device.count()} CUDA device(s); pass 0..{cuda.Device.count() - 1}")
        ctx = cuda.Device(device).retain_primary_context()
        ctx.push()
        try:
            yield
        finally:
            cuda.Context.pop()
            ctx.detach()
        return
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        if not 0 <= device < torch.cuda.device_count():
            raise HBAFError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); pass 0..{torch.cuda.device_count() - 1}")
        with torch.cuda.device(device):
            yield
        return
    if device != 0:
        raise HBAFError(f"--device {device} needs pycuda or a CUDA build of torch to select it; pip install pycuda")
    yield


# --------------------------------------------------------------------------- the engine file and its sidecar


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_engine(engine_path: str | Path, *, graph: str | None = None) -> tuple[bytes, Sidecar]:
    """Read an engine and check it against its sidecar, without TensorRT; return (engine bytes, sidecar).

    ``graph``: the sidecar must describe an engine of this graph (``GRAPH_FUSION``, a recogniser
    role); None accepts any."""
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
        cmd = build_command_for(f"{model}.onnx", precision, engine_path.parent, None, 1024)  # the model's own profile
        raise HBAFError(f"engine {engine_path} has no sidecar {side.name} (it records where the engine may run); rebuild with `{cmd}`")
    sidecar = Sidecar.read(side)
    rebuild = sidecar.build_command(engine_path.parent)
    if graph is not None and sidecar.graph != graph:
        what = "an HBAF fusion model" if graph == GRAPH_FUSION else f"a '{graph}' graph"
        raise HBAFError(f"engine {engine_path} holds a '{sidecar.graph}' graph, not {what}; pass the engine built from the right ONNX")
    if sidecar.engine_bytes and size != sidecar.engine_bytes:
        raise HBAFError(
            f"engine {engine_path} is {size} bytes but its sidecar says {sidecar.engine_bytes}: truncated or replaced; rebuild with `{rebuild}`"
        )
    data = engine_path.read_bytes()
    if sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
        raise HBAFError(f"engine {engine_path} does not match its sidecar (sha256 differs): corrupted or foreign; rebuild with `{rebuild}`")
    return data, sidecar


def check_source_onnx(sidecar: Sidecar, engine_path: str | Path) -> bool:
    """Refuse a stale engine: the ONNX it was built from, when it is still at the recorded path,
    must have the recorded sha256. Returns whether the ONNX was there to compare."""
    if not sidecar.onnx_path:
        return False
    onnx = Path(sidecar.onnx_path)
    if not onnx.is_file():
        log.info("%s: its ONNX %s is not here; the engine is used as built", Path(engine_path).name, onnx)
        return False
    if sha256_file(onnx) != sidecar.onnx_sha256:
        raise HBAFError(f"engine {engine_path} is stale: {onnx} changed after the engine was built from it (sha256 differs); "
                        f"rebuild with `{sidecar.build_command(Path(engine_path).parent)}`")
    return True


# --------------------------------------------------------------------------- GPU buffers


class _PycudaBuffers:
    """Pinned host + device buffers and one stream, through pycuda's driver API, in the device's
    primary context (the context the CUDA runtime, hence TensorRT, uses)."""

    def __init__(self, device: int) -> None:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        self._ctx.push()
        try:
            self.stream = cuda.Stream()
        finally:
            cuda.Context.pop()

    def allocate(self, name: str, count: int, dtype: np.dtype) -> int:
        self.enter()
        try:
            self.host[name] = self._cuda.pagelocked_empty(max(1, count), dtype)
            self.device[name] = self._cuda.mem_alloc(max(1, count) * np.dtype(dtype).itemsize)
        finally:
            self.exit()
        return int(self.device[name])

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def enter(self) -> None:
        self._ctx.push()

    def exit(self) -> None:
        self._cuda.Context.pop()

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
        if self._ctx is None:
            return
        self.enter()
        try:
            for mem in self.device.values():
                mem.free()
            self.device.clear()
            self.host.clear()
            self.stream = None
        finally:
            self.exit()
            self._ctx.detach()
            self._ctx = None


class _TorchBuffers:
    """The same buffers as torch tensors (pinned CPU + CUDA) on a torch CUDA stream."""

    def __init__(self, device: int) -> None:
        import torch  # noqa: PLC0415

        self._torch = torch
        self._device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(device=self._device)
        self.host: dict[str, Any] = {}
        self.device: dict[str, Any] = {}
        self._previous: list[Any] = []

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
        guard = self._torch.cuda.device(self._device)
        guard.__enter__()
        self._previous.append(guard)

    def exit(self) -> None:
        if self._previous:
            self._previous.pop().__exit__(None, None, None)

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


def make_buffers(device: int):
    """pycuda buffers, else torch CUDA tensors, else a one-line error saying what to install."""
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
    raise HBAFError("running a TensorRT engine needs pycuda (pip install pycuda) or a CUDA build of torch "
                    "(NVIDIA's Jetson wheel) for its GPU buffers")


class _State:
    """Everything a runner holds on the GPU, released in order by ``_release`` (never refers to the runner)."""

    def __init__(self) -> None:
        self.buffers: Any = None
        self.logger: Any = None  # outlives the runtime that reports through it
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None


def _release(state: _State) -> None:
    buffers = state.buffers
    if buffers is not None:
        buffers.enter()
    try:
        state.context = None  # the execution context before the engine, the engine before the runtime
        state.engine = None
        state.runtime = None
        state.logger = None
    finally:
        if buffers is not None:
            buffers.exit()
            state.buffers = None
            buffers.close()


# --------------------------------------------------------------------------- the runner


class EngineRunner:
    """A TensorRT engine with its sidecar: ``run({input name: array}) -> {output name: array}``.

    ``graph``: the graph the caller expects (a sidecar of another graph is refused in one line);
    ``profile``: which optimization profile to run; ``shape_fix``: the advice appended when an
    input falls outside the profile. Attributes: ``sidecar``, ``input_names``, ``output_names``,
    ``dtypes``, ``profile_shapes`` (name -> (min, opt, max) from the engine), ``path``."""

    def __init__(self, engine_path: str | Path, *, device: int = 0, graph: str | None = None, profile: int = 0,
                 shape_fix: str = "cut the input to fit or rebuild the engine with a larger profile") -> None:
        self.path = Path(engine_path)
        self.device = int(device)
        self.shape_fix = shape_fix
        engine_bytes, self.sidecar = read_engine(self.path, graph=graph)
        self.rebuild = self.sidecar.build_command(self.path.parent)
        check_source_onnx(self.sidecar, self.path)

        trt = import_tensorrt()
        gpu = gpu_facts(self.device)
        l4t, board = jetson_facts()
        check_engine_compat(self.sidecar, str(trt.__version__), gpu.name, gpu.compute_capability, engine_path=self.path,
                            l4t_release=l4t, board=board)
        self.gpu = gpu

        self._state = _State()
        self._finalizer = weakref.finalize(self, _release, self._state)  # also runs at interpreter exit
        self._lock = threading.Lock()
        try:
            self._load(trt, engine_bytes, profile)
        except BaseException:
            self._finalizer()  # nothing stays allocated when loading fails half way
            raise

    def _load(self, trt, engine_bytes: bytes, profile: int) -> None:
        state = self._state
        state.buffers = make_buffers(self.device)
        state.buffers.enter()
        try:
            state.logger = trt.Logger(trt.Logger.WARNING)
            state.runtime = trt.Runtime(state.logger)
            state.engine = state.runtime.deserialize_cuda_engine(engine_bytes)
            if state.engine is None:
                raise HBAFError(f"TensorRT could not deserialize {self.path}: truncated or foreign engine; rebuild with `{self.rebuild}`")
            state.context = state.engine.create_execution_context()
            if state.context is None:
                raise HBAFError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?); "
                                "close other GPU programs or rebuild the engine with a smaller profile")
            self._setup_io(trt, profile)
        finally:
            state.buffers.exit()

    def _setup_io(self, trt, profile: int) -> None:
        engine, context, buffers = self._state.engine, self._state.context, self._state.buffers
        if not 0 <= profile < engine.num_optimization_profiles:
            raise HBAFError(f"{self.path.name} has {engine.num_optimization_profiles} optimization profile(s), not {profile + 1}; rebuild with `{self.rebuild}`")
        if profile:
            context.set_optimization_profile_async(profile, buffers.stream_handle)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        shape_io = [n for n in names if engine.is_shape_inference_io(n)]
        if shape_io:
            raise HBAFError(f"{self.path.name} has shape-tensor I/O {shape_io}, which this runner does not feed; export the graph "
                            "with shapes computed inside it")
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if n not in self.input_names)
        self.dtypes = {}
        for n in names:
            try:
                self.dtypes[n] = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            except TypeError:  # e.g. bfloat16 or FP8 I/O, which numpy has no type for
                raise HBAFError(f"{self.path.name}: tensor '{n}' is {engine.get_tensor_dtype(n)}, which has no numpy type; "
                                "export the graph with float32/float16/int32/int64 inputs and outputs") from None
        recorded = self.sidecar.input_shapes()
        unknown = [n for n in self.input_names if n not in recorded.shapes]
        if unknown:
            raise HBAFError(f"{self.path.name} has inputs {unknown} its sidecar does not describe: the sidecar belongs to another "
                            f"engine; rebuild with `{self.rebuild}`")
        self.profile_shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        for n in self.input_names:
            shape = tuple(int(v) for v in engine.get_tensor_shape(n))
            if any(v < 0 for v in shape):
                self.profile_shapes[n] = tuple(tuple(int(v) for v in s) for s in engine.get_tensor_profile_shape(n, profile))
            else:
                self.profile_shapes[n] = (shape, shape, shape)
            context.set_input_shape(n, self.profile_shapes[n][2])  # max shapes give every output its largest size
        for n in names:
            shape = self.profile_shapes[n][2] if n in self.input_names else tuple(int(v) for v in context.get_tensor_shape(n))
            if any(v < 0 for v in shape):
                raise HBAFError(f"{self.path.name}: output '{n}' has no bounded shape {shape} (data-dependent); this runner "
                                "needs outputs whose shape follows from the inputs")
            ptr = buffers.allocate(n, int(np.prod(shape)), self.dtypes[n])
            if not context.set_tensor_address(n, ptr):
                raise HBAFError(f"TensorRT refused the buffer of '{n}' in {self.path.name}; rebuild with `{self.rebuild}`")

    def check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The feeds as contiguous arrays of the engine's dtypes, each inside the profile (one-line errors)."""
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise HBAFError(f"{self.path.name} takes inputs {list(self.input_names)}"
                            + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        arrays = {}
        for n in self.input_names:
            a = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
            lo, _, hi = self.profile_shapes[n]
            if a.ndim != len(hi) or any(not lo[i] <= a.shape[i] <= hi[i] for i in range(a.ndim)):
                raise HBAFError(f"input '{n}' has shape {a.shape}, outside the engine profile {lo}..{hi}; {self.shape_fix}")
            arrays[n] = a
        return arrays

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One call: every input by name -> every output by name, as new numpy arrays."""
        arrays = self.check_feeds(feeds)
        with self._lock:
            state = self._state
            if state.context is None:
                raise HBAFError(f"{self.path.name} was closed; load the engine again")
            buffers, context = state.buffers, state.context
            buffers.enter()
            try:
                for n, a in arrays.items():
                    if not context.set_input_shape(n, a.shape):
                        raise HBAFError(f"TensorRT rejected shape {a.shape} for input '{n}'; check that the shared axes (the batch) agree across inputs")
                    buffers.to_device(n, a)
                shapes = {n: tuple(int(v) for v in context.get_tensor_shape(n)) for n in self.output_names}
                if not context.execute_async_v3(buffers.stream_handle):
                    raise HBAFError(f"TensorRT failed to run {self.path.name} (see the log above); rebuild the engine if this persists")
                hosts = {n: buffers.to_host(n, int(np.prod(s))) for n, s in shapes.items()}
                buffers.synchronize()
            finally:
                buffers.exit()
            return {n: np.array(hosts[n]).reshape(shapes[n]) for n in self.output_names}

    def close(self) -> None:
        """Free the GPU buffers and the TensorRT objects now (also done at interpreter exit)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive
