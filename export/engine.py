"""ONNX -> TensorRT ``.engine``, built on the device that will run it.

    hbaf-export engine --onnx student.int8.onnx --precision int8 --out engines/ \\
        --workspace-mb 1024 --timing-cache engines/cache.bin          # profile: the model's own
    hbaf-export engine --onnx whisper-tiny.en.encoder.fp32.onnx --precision fp16 --out engines/ \\
        --shape mel:1x80x1000:1x80x1000:4x80x1000                     # any graph: shapes by tensor name

One builder class (``EngineBuilder``), one job (its command line is in export/cli.py), any graph:

- an HBAF fusion ONNX (the six contract inputs): the profile is over (batch, frames, tokens),
  by default the model's own (``Profiles.for_spec``), and the sidecar carries its ``ModelSpec``
  (whose ``outputs`` say whether the engine returns the uni-modal heads ``audio_probs`` /
  ``text_probs``; the parsed network must have every output it lists);
- any other graph (the recogniser's encoder and decoder): the profile is given by tensor name,
  from ``--shape`` flags, else the graph's own ``hbaf_profile`` metadata (``graph_profile``),
  else the graph's fixed input shapes.

The engine only runs on the TensorRT version and GPU that built it, so its name says so —
``<model>.<trt-version>.<gpu>.<precision>.engine`` — and a JSON sidecar (``<engine>.json``,
the contract's ``Sidecar``) records the graph, the ONNX path and sha256, TensorRT version, GPU
name and compute capability, on a Jetson the Jetson Linux release and the board, precision,
optimization profile and what rebuilds it. The runtime (``edge_runtime.trt_runner``) compares
the sidecar with the machine and refuses a mismatch, or an engine whose ONNX changed since,
with the exact build command. Naming, profiles and sidecar are defined in hbaf/contract.py;
this module only drives TensorRT, on the CUDA device ``--device`` (made current for the build).
TensorRT 10 only: 11 removes the FP16/INT8 builder flags the fp16 path uses.

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

import datetime as _dt
import hashlib
import logging
from pathlib import Path
from typing import Any

from edge_runtime.jetson import jetson_facts
from edge_runtime.trt_runner import TRT_SUPPORTED_MAJOR, gpu_facts, import_tensorrt, on_device, trt_major
from export.trt_compat import check_graph_for_tensorrt, check_onnx_for_tensorrt
from hbaf import __version__ as PACKAGE_VERSION
from hbaf.contract import (
    GRAPH_FUSION,
    GRAPH_ORT_CPU,
    INPUT_NAMES,
    PRECISIONS,
    PROFILE_METADATA_KEY,
    Profiles,
    ShapeProfile,
    Sidecar,
    engine_name,
    graph_kind,
    has_qdq,
    onnx_metadata,
    read_onnx,
    set_onnx_metadata,
    sidecar_path,
    spec_from_onnx,
)
from hbaf.errors import HBAFError
from hbaf.io import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)


def check_network_outputs(network, spec, onnx_path) -> None:
    """The parsed network (``trt.INetworkDefinition``) has every output the model's spec lists (the
    contract's three and the uni-modal heads of a model that has them), so the sidecar promises
    nothing the engine lacks."""
    names = {network.get_output(i).name for i in range(network.num_outputs)}
    missing = [n for n in spec.outputs if n not in names]
    if missing:
        raise HBAFError(f"the TensorRT network parsed from {onnx_path} lacks outputs {missing} that its metadata lists; "
                        "export the ONNX again with `hbaf-export onnx`")


def _tqdm_progress_monitor(trt):
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per build phase (TensorRT >= 10)."""
    from tqdm import tqdm

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


# --------------------------------------------------------------------------- a graph's own profile


def set_graph_profile(proto, graph: str, shapes: ShapeProfile) -> None:
    """Write a graph's name and optimization profile into its ONNX metadata (``hbaf_profile``), so
    ``hbaf-export engine`` builds it with no profile flags. For the recogniser's exporters."""
    missing = [n for n in shapes.names if n not in {i.name for i in proto.graph.input}]
    if missing:
        raise HBAFError(f"profile names inputs {missing} the graph does not have; name the graph's inputs")
    set_onnx_metadata(proto, {"graph": graph, "shapes": shapes.to_dict()}, PROFILE_METADATA_KEY)


def graph_profile(proto, source: str = "ONNX model") -> tuple[str, ShapeProfile] | None:
    """(graph name, profile) from the ONNX metadata written by ``set_graph_profile``, None when absent."""
    meta = onnx_metadata(proto, PROFILE_METADATA_KEY)
    if not meta:
        return None
    try:
        return str(meta["graph"]), ShapeProfile.from_dict(meta["shapes"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise HBAFError(f"{source} has a malformed '{PROFILE_METADATA_KEY}' metadata entry ({err}); export the graph again") from err


def _static_profile(proto) -> ShapeProfile | None:
    """The profile of a graph whose inputs all have fixed shapes, else None."""
    shapes = {}
    for vi in proto.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return None
        shape = tuple(int(d.dim_value) for d in dims)
        shapes[vi.name] = (shape, shape, shape)
    return ShapeProfile(shapes)


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
        shapes: ShapeProfile | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise HBAFError(f"--precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
        if workspace_mb < 16:
            raise HBAFError(f"--workspace-mb {workspace_mb} is too small; give at least 16 (1024 is a good start)")
        self.onnx_path = Path(onnx_path)
        self.precision = precision
        self.profiles = profiles  # fusion: None = the model's own (Profiles.for_spec), once its ONNX is read
        self.shapes = shapes  # any other graph: None = its own (metadata, else its fixed shapes)
        self.workspace_mb = int(workspace_mb)
        self.timing_cache = Path(timing_cache) if timing_cache else None
        self.verbose = verbose
        self.device = device

    # ---- checks that need no TensorRT

    def inspect(self) -> tuple[bytes, dict[str, Any]]:
        """Read and check the ONNX: returns its bytes and what the sidecar needs from it (``graph``;
        ``spec``: a fusion model's ModelSpec, else None; ``shapes``: another graph's profile;
        ``quantized``, ``model_version``)."""
        model = read_onnx(self.onnx_path, check_io=False)
        # a fusion model carries the hbaf metadata entry or the contract's inputs; anything else is another graph
        fusion = bool(onnx_metadata(model)) or set(INPUT_NAMES) <= {i.name for i in model.graph.input}
        if fusion and graph_kind(model) == GRAPH_ORT_CPU:
            raise HBAFError(f"{self.onnx_path} is the ONNX Runtime CPU graph (com.microsoft operators), which TensorRT cannot "
                            "parse; build the engine from the contract export (model.onnx, or model.int8-trt.onnx for INT8)")
        if fusion and self.shapes is not None:
            raise HBAFError(f"{self.onnx_path} is an HBAF fusion model: give its profile with --min/--opt/--max, not --shape")
        if not fusion and self.profiles is not None:
            raise HBAFError(f"{self.onnx_path} is not an HBAF fusion model (no {', '.join(INPUT_NAMES[:2])}, ...): give its profile "
                            "with --shape NAME:MIN:OPT:MAX per input, not --min/--opt/--max")
        problems = check_onnx_for_tensorrt(model) if fusion else check_graph_for_tensorrt(model)
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
        meta = onnx_metadata(model)
        info: dict[str, Any] = {"graph": GRAPH_FUSION, "spec": None, "shapes": None, "quantized": quantized,
                                "model_version": str(meta.get("version") or meta.get("hbaf_version") or "")}
        if fusion:
            info["spec"] = spec_from_onnx(model, source=str(self.onnx_path))
        else:
            info["graph"], info["shapes"] = self._graph_shapes(model)
        return self.onnx_path.read_bytes(), info

    def _graph_shapes(self, model) -> tuple[str, ShapeProfile]:
        """A non-fusion graph's name and profile: --shape, else its metadata, else its fixed shapes."""
        own = graph_profile(model, str(self.onnx_path))
        name = own[0] if own else (model.graph.name or self.onnx_path.stem)
        shapes = self.shapes or (own[1] if own else None) or _static_profile(model)
        if shapes is None:
            dynamic = [i.name for i in model.graph.input if not all(d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)]
            raise HBAFError(f"{self.onnx_path} is not an HBAF fusion model and carries no optimization profile (metadata "
                            f"'{PROFILE_METADATA_KEY}'); give one per dynamic input {dynamic} with --shape NAME:MIN:OPT:MAX, "
                            "e.g. --shape mel:1x80x1000:1x80x1000:4x80x1000")
        inputs = {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input}
        wrong = [n for n in shapes.names if n not in inputs]
        missing = [n for n in inputs if n not in shapes.shapes]
        if wrong or missing:
            raise HBAFError(f"the profile does not fit {self.onnx_path} (inputs {list(inputs)})"
                            + (f"; it names unknown inputs {wrong}" if wrong else "") + (f"; it lacks {missing}" if missing else "")
                            + "; give one --shape NAME:MIN:OPT:MAX per input")
        ranks = [n for n in shapes.names if len(shapes.shapes[n][0]) != inputs[n]]
        if ranks:
            raise HBAFError(f"--shape of {ranks} has the wrong rank for {self.onnx_path}; give one size per axis")
        return name, shapes

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
        if trt_major(trt) > TRT_SUPPORTED_MAJOR:
            raise HBAFError(f"TensorRT {trt.__version__} is not supported: TensorRT 11 removes the FP16/INT8 builder flags this "
                            "builder uses; install TensorRT 10 (JetPack 6.1/6.2 ship 10.3; on x86 pip install 'tensorrt>=10.3,<11')")
        with on_device(self.device):
            return self._build(trt, onnx_bytes, info, Path(out_dir))

    def _build(self, trt, onnx_bytes: bytes, info: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
        gpu = gpu_facts(self.device)
        l4t, board = jetson_facts()
        strongly_typed = info["quantized"] and trt_major(trt) >= 10

        logger = trt.Logger(trt.Logger.VERBOSE if self.verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = self._parse(trt, builder, onnx_bytes, strongly_typed)  # the parser owns weights the network uses: keep it alive
        if info["graph"] == GRAPH_FUSION:
            check_network_outputs(network, info["spec"], self.onnx_path)

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

        if info["graph"] == GRAPH_FUSION:
            if self.profiles is None:
                self.profiles = Profiles.for_spec(info["spec"])
            self.profiles.check(info["spec"])
            shapes = self.profiles.shape_profile(info["spec"])
        else:
            shapes = info["shapes"]
        # the profile covers the network's dynamic inputs (an input of fixed shape needs none)
        dynamic = {network.get_input(i).name for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)}
        if dynamic:
            profile = builder.create_optimization_profile()
            for name, (lo, mid, hi) in shapes.shapes.items():
                if name in dynamic:
                    profile.set_shape(name, lo, mid, hi)
            if config.add_optimization_profile(profile) < 0:
                raise HBAFError(f"TensorRT refused the optimization profile of {self.onnx_path} ({', '.join(sorted(dynamic))}); "
                                "check that every dynamic input has min <= opt <= max within the graph's fixed sizes")
        self._load_timing_cache(config)
        if hasattr(trt, "IProgressMonitor"):
            config.progress_monitor = _tqdm_progress_monitor(trt)

        log.info("building %s engine from %s on %s (sm %s, TensorRT %s, %s%s)", self.precision, self.onnx_path, gpu.name,
                 gpu.compute_capability, trt.__version__, "strongly typed" if strongly_typed else "weakly typed",
                 f", {board}, Jetson Linux R{l4t}" if l4t else "")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise HBAFError(
                f"TensorRT could not build an engine from {self.onnx_path} (see the TensorRT log above, or rerun with --verbose); "
                "try a larger --workspace-mb or a smaller profile (--max / --shape)"
            )
        self._save_timing_cache(config)

        engine_bytes = memoryview(serialized).tobytes()
        engine_path = out_dir / engine_name(self.onnx_path.stem, str(trt.__version__), gpu.name, self.precision)
        write_bytes_atomic(engine_path, engine_bytes)
        fusion = info["graph"] == GRAPH_FUSION
        sidecar = Sidecar(
            graph=info["graph"],
            model=info["spec"],
            profiles=self.profiles if fusion else None,
            shapes=None if fusion else shapes,
            onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            l4t_release=l4t,
            board=board,
            precision=self.precision,
            package_version=PACKAGE_VERSION,
            built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
