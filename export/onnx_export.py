"""PyTorch checkpoint -> ONNX (the export contract) and PyTorch/ONNX Runtime parity on real speech.

The contract (docs: DESIGN "Export, calibration, engines")::

    inputs   audio_feats [B,T,80] f32, audio_mask [B,T] f32, input_ids [B,L] i32,
             attention_mask [B,L] i32, memory [B,K,D] f32, memory_mask [B,K] f32
    outputs  probs [B,C], utt_emb [B,D], gate [B,2]

B, T and L are dynamic (symbolic "batch", "frames", "tokens"); K and D are fixed by the
checkpoint's config. The graph is stateless: the caller owns the dialogue memory.

Exporter choice. The torch.export-based exporter (``dynamo=True``, torch >= 2.5 with
onnxscript) is tried first: its graph is about half the size of the TorchScript
exporter's (no Constant/Identity/Shape->Gather->Unsqueeze chains) and it names the
dynamic axes from ``torch.export.Dim``. It emits opset 18; we convert to the requested
opset (17 by default, the newest TensorRT 8.6 parses) with ``onnx.version_converter``.
The TorchScript exporter is the fallback (older torch, no onnxscript, or an export
failure). After either, the int32 ``input_ids`` feed the word-embedding Gather directly
(ONNX Gather takes int32 indices), without the int32 -> int64 Cast that ``.long()`` in
the model leaves behind.

The exported file carries metadata key ``hbaf`` (JSON: labels, config, hbaf_version,
context_size, memory_dim, source_checkpoint_sha256, ...), and the checkpoint's
``tokenizer.json`` is copied next to it (the runtime looks for it there).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hbaf import __version__
from hbaf.errors import HBAFError
from hbaf.io import atomic_path

log = logging.getLogger(__name__)

INPUT_NAMES = ("audio_feats", "audio_mask", "input_ids", "attention_mask", "memory", "memory_mask")
OUTPUT_NAMES = ("probs", "utt_emb", "gate")
METADATA_KEY = "hbaf"
DIM_NAMES = {"B": "batch", "T": "frames", "L": "tokens"}
GRAPHS = ("contract", "ort-cpu")
TOKENIZER_FILE = "tokenizer.json"
_PROTO_LIMIT = 2**31 - 1  # protobuf's 2 GB ceiling for a single-file model
_DTYPES = {
    "audio_feats": np.float32, "audio_mask": np.float32, "input_ids": np.int32,
    "attention_mask": np.int32, "memory": np.float32, "memory_mask": np.float32,
}
# opset 18 moved `axes` of these reductions from an attribute to an input and added
# `noop_with_empty_axes`; ReduceSum already had both since opset 13.
_REDUCE_ATTR_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})


# ----------------------------------------------------------------------------- export


def export_onnx(checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = 17, check: bool = True,
                exporter: str = "auto", graph: str = "contract") -> Path:
    """Export a checkpoint to ONNX following the contract; returns the written path.

    ``exporter``: "auto" (torch.export-based first, TorchScript as fallback), "dynamo" or
    "torchscript". ``check``: onnx.checker (full), the TensorRT compatibility check (when
    export/trt_compat.py is importable) and an ONNX Runtime run compared with PyTorch.
    ``graph``: "contract" (standard operators, what TensorRT parses) or "ort-cpu" (the same
    model with ONNX Runtime's fused CPU kernels, opset 18; see export/ort_cpu.py).
    """
    import torch

    from hbaf.checkpoint import load_checkpoint, sha256_file, tokenizer_path

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise HBAFError(f"unknown exporter '{exporter}'; choose auto, dynamo or torchscript")
    if graph not in GRAPHS:
        raise HBAFError(f"unknown graph '{graph}'; choose {' or '.join(GRAPHS)}")
    if graph == "ort-cpu":
        if exporter == "torchscript":
            raise HBAFError("the ort-cpu graph needs the torch.export-based exporter; drop --exporter torchscript")
        exporter, opset = "dynamo", max(opset, 18)
    if not 13 <= opset <= 20:
        raise HBAFError(f"opset {opset} is outside 13..20 (per-channel Q/DQ needs >= 13, TensorRT 10 parses <= 20); use --opset 17")
    ckpt = Path(checkpoint_dir)
    model, meta = load_checkpoint(ckpt)
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise HBAFError(f"output {out} should end in .onnx (the runtime picks the backend by extension); pass e.g. {out.with_suffix('.onnx')}")
    cfg = model.cfg
    example = _example_inputs(cfg, model.memory_dim)
    t0 = time.perf_counter()
    if graph == "ort-cpu":
        from export import ort_cpu

        with ort_cpu.fused_attention():
            proto, used = _export_graph(model, example, opset, cfg.max_tokens, exporter,
                                        translations=ort_cpu.translation_table())
    else:
        proto, used = _export_graph(model, example, opset, cfg.max_tokens, exporter)
    _drop_index_casts(proto)
    _convert_opset(proto, opset)
    _name_io_dims(proto, cfg.context_size, model.memory_dim, len(model.labels))
    if graph == "ort-cpu":
        proto = ort_cpu.fuse_transformer_ops(proto)
        ort_cpu.add_contrib_types(proto)
    tok_file = tokenizer_path(ckpt)
    weights_sha = meta.get("weights_sha256") or sha256_file(ckpt / "model.safetensors")
    info = {
        "labels": list(model.labels),
        "config": cfg.to_dict(),
        "hbaf_version": __version__,
        "context_size": int(cfg.context_size),
        "memory_dim": int(model.memory_dim),
        "source_checkpoint_sha256": weights_sha,
        "source_checkpoint": str(ckpt.resolve()),
        "tokenizer_sha256": sha256_file(tok_file) if tok_file.exists() else None,
        "max_frames": _max_frames(),
        "max_tokens": int(cfg.max_tokens),
        "exporter": used,
        "opset": opset,
        "graph": graph,
        "torch_version": torch.__version__.split("+")[0],
    }
    set_hbaf_metadata(proto, info)
    proto.producer_name = "hbaf-edge"
    proto.producer_version = __version__
    proto.graph.name = "hbaf"
    if check:
        _check_proto(proto, full=graph == "contract")
    tok_dst = out.parent / TOKENIZER_FILE
    if tok_file.exists():
        _check_tokenizer_slot(tok_file, tok_dst)
    else:
        log.warning("checkpoint %s has no %s; the runtime will fall back to the text encoder's tokenizer", ckpt, TOKENIZER_FILE)

    def verify(path: Path) -> None:  # runs on the written file before it replaces ``out``
        if graph == "contract":
            _check_trt(path)
        _smoke_parity(model, path, cfg)

    save_onnx(proto, out, verify=verify if check else None)
    if tok_file.exists():
        _copy_tokenizer(tok_file, tok_dst)
    log.info("exported %s with the %s exporter in %.1fs (%.1f MB, opset %d)", out, used, time.perf_counter() - t0,
             out.stat().st_size / 1e6, opset)
    return out


def _max_frames() -> int:
    from hbaf.features import MAX_FRAMES

    return int(MAX_FRAMES)


def _example_inputs(cfg, memory_dim: int) -> tuple:
    """Batch 2 with padding in the second row, odd frame count: nothing specializes to 1 or to even T."""
    import torch

    g = torch.Generator().manual_seed(0)
    b, t, length, k = 2, 203, 11, cfg.context_size
    feats = torch.randn(b, t, cfg.n_mels, generator=g)
    fmask = torch.ones(b, t)
    fmask[1, 150:] = 0
    ids = torch.randint(1, cfg.vocab_size, (b, length), generator=g, dtype=torch.int64).to(torch.int32)
    imask = torch.ones(b, length, dtype=torch.int32)
    imask[1, 7:] = 0
    memory = torch.randn(b, k, memory_dim, generator=g)
    mmask = torch.zeros(b, k)
    mmask[0, k // 2:] = 1
    return feats, fmask, ids, imask, memory, mmask


def _export_graph(model, example: tuple, opset: int, max_tokens: int, exporter: str, translations: dict | None = None):
    failures: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            return _export_dynamo(model, example, opset, max_tokens, translations), "dynamo"
        except Exception as err:  # missing onnxscript, old torch, an unsupported construct
            why = _first_line(err)
            failures.append(f"dynamo: {why}")
            if exporter == "dynamo":
                raise HBAFError(f"the torch.export-based ONNX exporter failed ({why}); pip install onnxscript, use torch>=2.5, or pass --exporter torchscript") from err
            log.warning("torch.export-based exporter failed (%s); falling back to the TorchScript exporter", why)
    try:
        return _export_torchscript(model, example, opset), "torchscript"
    except Exception as err:
        failures.append(f"torchscript: {_first_line(err)}")
        raise HBAFError(f"ONNX export failed ({'; '.join(failures)}); install a torch with an ONNX exporter (pip install onnxscript) "
                        "and check the checkpoint") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:240]


def _export_dynamo(model, example: tuple, opset: int, max_tokens: int, translations: dict | None = None):
    import torch

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise RuntimeError(f"torch {torch.__version__} has no dynamo=True ONNX export")
    import onnxscript  # noqa: F401  (the exporter needs it; fail early with a clear reason)

    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=_max_frames())
    tokens = torch.export.Dim("tokens", min=1, max=max_tokens)
    dynamic = {
        "audio_feats": {0: batch, 1: frames}, "audio_mask": {0: batch, 1: frames},
        "input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens},
        "memory": {0: batch}, "memory_mask": {0: batch},
    }
    # The exporter builds opset 18 natively; a lower target is converted afterwards (_convert_opset).
    # torch.export cannot prove that the conv-subsampled frame count equals the mask's strided
    # length for every T, so it defers those guards to runtime asserts, which ONNX drops; the
    # graph holds for every T (tests compare it with PyTorch from T = 1 to T = 998).
    params = inspect.signature(torch.onnx.export).parameters
    optional = {k: v for k, v in {"external_data": False, "optimize": True, "verbose": False,
                                  "custom_translation_table": translations}.items() if k in params and v is not None}
    if translations and "custom_translation_table" not in optional:
        raise RuntimeError(f"torch {torch.__version__}'s ONNX exporter has no custom_translation_table")
    with _quiet():
        program = torch.onnx.export(
            model, example, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            opset_version=max(opset, 18), dynamo=True, dynamic_shapes=dynamic, **optional,
        )
        if "optimize" not in params and hasattr(program, "optimize"):
            program.optimize()
    return program.model_proto


def _export_torchscript(model, example: tuple, opset: int):
    import onnx
    import torch

    axes = {"audio_feats": {0: "batch", 1: "frames"}, "audio_mask": {0: "batch", 1: "frames"},
            "input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "memory": {0: "batch"}, "memory_mask": {0: "batch"},
            "probs": {0: "batch"}, "utt_emb": {0: "batch"}, "gate": {0: "batch"}}
    kwargs = dict(input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                  opset_version=opset, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with tempfile.TemporaryDirectory(prefix="hbaf-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _quiet():
            torch.onnx.export(model, example, str(path), **kwargs)
        return onnx.load(str(path))


@contextlib.contextmanager
def quiet_output(loggers: Sequence[str], what: str, tail: int | None = None):
    """Silence chatty libraries: the named loggers ("" is the root logger) drop to ERROR, warnings
    are ignored and stdout is captured; what was printed goes to the debug log as ``what`` output
    (its last ``tail`` characters)."""
    import warnings

    buf = io.StringIO()
    noisy = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(noisy, levels):
                lg.setLevel(level)
            text = buf.getvalue().strip()
            if text:
                log.debug("%s output:\n%s", what, text[-tail:] if tail else text)


def _quiet():
    """The exporters print progress and deprecation chatter; keep it in the debug log."""
    return quiet_output(("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir"), "exporter")


def consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _drop_index_casts(proto) -> int:
    """Feed int32 ``input_ids`` straight into Gather: remove Cast(int32 -> int64) nodes whose
    only users are Gather index inputs (or Shape). Returns how many were removed."""
    from onnx import TensorProto

    graph = proto.graph
    int32_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.INT32}
    users = consumers(graph)
    outputs = {o.name for o in graph.output}
    removed = []
    for node in graph.node:
        if node.op_type != "Cast" or node.input[0] not in int32_inputs:
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        uses = users.get(node.output[0], [])
        if to != TensorProto.INT64 or not uses or node.output[0] in outputs:
            continue
        index_only = all((u.op_type == "Gather" and list(u.input).index(node.output[0]) == 1 and u.input[0] != node.output[0])
                         or u.op_type == "Shape" for u in uses)
        if index_only:
            for u in uses:
                for i, name in enumerate(u.input):
                    if name == node.output[0]:
                        u.input[i] = node.input[0]
            removed.append(node)
    for node in removed:
        graph.node.remove(node)
    if removed:
        log.debug("removed %d int32->int64 Cast(s) in front of Gather", len(removed))
    return len(removed)


def _convert_opset(proto, opset: int) -> None:
    import onnx
    import onnx.version_converter

    current = next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), None)
    if current == opset:
        return
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
    except Exception as err:
        raise HBAFError(f"cannot convert the exported graph from opset {current} to {opset} ({_first_line(err)}); "
                        f"pass --opset {current}") from err
    if opset < 18:
        for node in converted.graph.node:
            if node.op_type in _REDUCE_ATTR_OPS:
                keep = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
                if len(keep) != len(node.attribute):
                    if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
                        raise HBAFError(f"{node.op_type} with noop_with_empty_axes=1 has no opset {opset} form; pass --opset 18")
                    del node.attribute[:]
                    node.attribute.extend(keep)
    proto.CopyFrom(converted)


def _name_io_dims(proto, k: int, d: int, c: int) -> None:
    """Force the contract's shapes on the graph I/O and use the same symbol names inside the graph."""
    spec = {
        "audio_feats": ("B", "T", None), "audio_mask": ("B", "T"), "input_ids": ("B", "L"),
        "attention_mask": ("B", "L"), "memory": ("B", k, d), "memory_mask": ("B", k),
        "probs": ("B", c), "utt_emb": ("B", d), "gate": ("B", 2),
    }
    rename: dict[str, str] = {}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        want = spec[vi.name]
        if len(dims) != len(want):
            raise HBAFError(f"exported {vi.name} has rank {len(dims)}, the contract needs {len(want)}; this is an export bug")
        for dim, w in zip(dims, want):
            if isinstance(w, str):
                if dim.HasField("dim_param") and dim.dim_param != DIM_NAMES[w]:
                    rename[dim.dim_param] = DIM_NAMES[w]
                dim.dim_param = DIM_NAMES[w]
            elif isinstance(w, int):
                dim.dim_value = w
    if rename:
        for vi in proto.graph.value_info:
            for dim in vi.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in rename:
                    dim.dim_param = rename[dim.dim_param]


def set_hbaf_metadata(proto, info: dict, key: str = METADATA_KEY) -> None:
    """Replace (or add) the JSON metadata entry ``key``."""
    for prop in list(proto.metadata_props):
        if prop.key == key:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key = key
    entry.value = json.dumps(info, sort_keys=True)


def read_hbaf_metadata(proto, key: str = METADATA_KEY) -> dict:
    for prop in proto.metadata_props:
        if prop.key == key:
            try:
                value = json.loads(prop.value)
            except ValueError as err:
                raise HBAFError(f"ONNX metadata '{key}' is not valid JSON ({err}); export the model again") from err
            return value if isinstance(value, dict) else {}
    return {}


def _check_proto(proto, full: bool = True) -> None:
    import onnx

    try:
        if proto.ByteSize() < _PROTO_LIMIT:
            onnx.checker.check_model(proto, full_check=full)
    except onnx.checker.ValidationError as err:
        raise HBAFError(f"the exported graph fails onnx.checker ({_first_line(err)}); this is an export bug, try --exporter torchscript") from err


def _check_trt(path: Path) -> None:
    try:
        from export.trt_compat import check_onnx_for_tensorrt
    except ImportError:
        log.info("export/trt_compat.py not available; skipping the TensorRT compatibility check")
        return
    problems = check_onnx_for_tensorrt(path)
    for p in problems:
        log.warning("TensorRT compatibility: %s", p)
    if not problems:
        log.info("TensorRT compatibility check: OK")


def _smoke_parity(model, path: Path, cfg) -> None:
    """Random inputs at two shapes: ONNX Runtime must reproduce PyTorch (catches a broken export early)."""
    import torch

    runner = OrtRunner(path, threads=2)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for b, t, length in ((1, 57, 5), (3, 301, 17)):
        feeds = {
            "audio_feats": torch.randn(b, t, cfg.n_mels, generator=g).numpy(),
            "audio_mask": np.ones((b, t), np.float32),
            "input_ids": torch.randint(1, cfg.vocab_size, (b, length), generator=g).numpy().astype(np.int32),
            "attention_mask": np.ones((b, length), np.int32),
            "memory": torch.randn(b, cfg.context_size, model.memory_dim, generator=g).numpy(),
            "memory_mask": np.ones((b, cfg.context_size), np.float32),
        }
        feeds["audio_mask"][-1, t // 2:] = 0
        feeds["attention_mask"][-1, length // 2:] = 0
        ref = TorchRunner(model)(feeds)
        got = runner(feeds)
        worst = max(worst, float(np.abs(ref[0] - got[0]).max()))
    if not worst < 1e-3:
        raise HBAFError(f"ONNX Runtime disagrees with PyTorch on {path} (max |probs diff| {worst:.3g}); "
                        "this is an export bug, try --exporter torchscript")
    log.info("ONNX Runtime vs PyTorch on random inputs: max |probs diff| %.2g", worst)


def save_onnx(proto, out: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Path:
    """Write atomically; a single file below 2 GB, else weights in ``<name>.data`` next to it.

    ``verify(path)`` runs on the written temporary file; if it raises, ``out`` is left untouched.
    """
    import onnx

    out = Path(out)
    with atomic_path(out) as tmp:
        if proto.ByteSize() < _PROTO_LIMIT:
            onnx.save_model(proto, str(tmp))
        else:
            # the external file is referenced by name, so it is written under its final name
            onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=out.name + ".data", size_threshold=1024)
        if verify is not None:
            verify(tmp)
    return out


def _check_tokenizer_slot(src: Path, dst: Path) -> None:
    from hbaf.checkpoint import sha256_file

    if dst.exists() and sha256_file(dst) != sha256_file(src):
        raise HBAFError(f"{dst} exists and is a different tokenizer; export into a separate folder (one model family per folder) or remove it")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    _check_tokenizer_slot(src, dst)
    if dst.exists():
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def load_onnx_model(path: str | os.PathLike):
    """Load an ONNX file with one-line errors for missing, empty, truncated or non-ONNX files."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise HBAFError(f"ONNX file not found: {p}; export one with `hbaf-export onnx --checkpoint DIR --out {p.name}`")
    if p.is_dir():
        raise HBAFError(f"{p} is a folder; pass the .onnx file inside it")
    if p.stat().st_size == 0:
        raise HBAFError(f"ONNX file {p} is empty (0 bytes); export it again with `hbaf-export onnx`")
    try:
        proto = onnx.load(str(p))
    except Exception as err:  # DecodeError, truncated protobuf, missing external data
        raise HBAFError(f"{p} is not a readable ONNX model ({_first_line(err)[:120]}); the file is corrupt or truncated: export it again") from err
    if not proto.HasField("graph") or not proto.graph.node or proto.ir_version == 0:
        raise HBAFError(f"{p} is not an ONNX model (no graph); the file is corrupt: export it again with `hbaf-export onnx`")
    names = [i.name for i in proto.graph.input]
    missing = [n for n in INPUT_NAMES if n not in names]
    if missing:
        raise HBAFError(f"{p} lacks inputs {missing}; it does not follow the HBAF export contract: export it with `hbaf-export onnx`")
    return proto


def model_info(path: str | os.PathLike) -> dict:
    """The ``hbaf`` metadata of an exported model (labels, config, K, D, ...); errors if absent."""
    proto = load_onnx_model(path)
    info = read_hbaf_metadata(proto)
    if not info.get("labels") or "context_size" not in info or "memory_dim" not in info:
        raise HBAFError(f"{path} carries no HBAF metadata (labels, context size); export it with `hbaf-export onnx` from a checkpoint")
    return info


# ----------------------------------------------------------------------------- runners


class TorchRunner:
    """PyTorch eager: feeds (numpy, contract names) -> (probs, utt_emb, gate)."""

    def __init__(self, model) -> None:
        self.model = model.eval()

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.model(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in INPUT_NAMES))
        return tuple(o.numpy() for o in out)  # type: ignore[return-value]


class OrtRunner:
    """ONNX Runtime on CPU: feeds -> (probs, utt_emb, gate)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = 2, optimize: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            load_onnx_model(self.path)  # a clearer message when the file itself is the problem
            raise HBAFError(f"ONNX Runtime cannot load {self.path} ({_first_line(err)[:160]}); export it again") from err

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inputs = {n: np.ascontiguousarray(feeds[n], dtype=_DTYPES[n]) for n in INPUT_NAMES}
        return tuple(self.session.run(list(OUTPUT_NAMES), inputs))  # type: ignore[return-value]


Runner = Callable[[dict], tuple]


# ----------------------------------------------------------------------------- dialogues


@dataclass
class Utterance:
    feats: np.ndarray  # [T, 80] log-mel
    ids: np.ndarray  # [L] int32 token ids


def tokenize(texts: Sequence[str], tokenizer) -> list[np.ndarray]:
    out = []
    for t in texts:
        ids, mask = tokenizer([t])
        out.append(ids[0, : int(mask[0].sum())].astype(np.int32))
    return out


def single_feeds(utt: Utterance, memory: np.ndarray, memory_mask: np.ndarray) -> dict[str, np.ndarray]:
    feats = np.asarray(utt.feats, dtype=np.float32)[None]
    return {
        "audio_feats": feats,
        "audio_mask": np.ones(feats.shape[:2], np.float32),
        "input_ids": utt.ids[None].astype(np.int32),
        "attention_mask": np.ones((1, utt.ids.shape[0]), np.int32),
        "memory": memory[None].astype(np.float32),
        "memory_mask": memory_mask[None].astype(np.float32),
    }


def batch_feeds(utts: Sequence[Utterance], memory: np.ndarray, memory_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Pad utterances to one batch exactly as training does (features with the silence level, ids with 0)."""
    from hbaf.train import SILENCE_LEVEL

    b = len(utts)
    t = max(u.feats.shape[0] for u in utts)
    length = max(u.ids.shape[0] for u in utts)
    feats = np.full((b, t, utts[0].feats.shape[1]), SILENCE_LEVEL, np.float32)
    fmask = np.zeros((b, t), np.float32)
    ids = np.zeros((b, length), np.int32)
    imask = np.zeros((b, length), np.int32)
    for i, u in enumerate(utts):
        feats[i, : u.feats.shape[0]] = u.feats
        fmask[i, : u.feats.shape[0]] = 1
        ids[i, : u.ids.shape[0]] = u.ids
        imask[i, : u.ids.shape[0]] = 1
    return {"audio_feats": feats, "audio_mask": fmask, "input_ids": ids, "attention_mask": imask,
            "memory": memory.astype(np.float32), "memory_mask": memory_mask.astype(np.float32)}


def run_dialogues(runner: Runner, dialogues: Sequence[Sequence[int]], utts: Sequence[Utterance], context_size: int,
                  memory_dim: int, desc: str | None = None) -> dict[str, np.ndarray]:
    """Run every dialogue utterance by utterance (batch 1), feeding each the last K ``utt_emb``
    this same runner produced for its dialogue: left-padded, newest last, as the runtime's
    dialogue memory and training do. Returns arrays indexed like ``utts`` (probs, utt_emb,
    gate, and the memory/memory_mask each utterance saw)."""
    from tqdm import tqdm

    n = len(utts)
    k, d = context_size, memory_dim
    res: dict[str, np.ndarray] = {"memory": np.zeros((n, k, d), np.float32), "memory_mask": np.zeros((n, k), np.float32)}
    total = sum(len(g) for g in dialogues)
    bar = tqdm(total=total, desc=desc, unit="utt", leave=False, disable=desc is None)
    for dialogue in dialogues:
        history: list[np.ndarray] = []
        for i in dialogue:
            mem = np.zeros((k, d), np.float32)
            mask = np.zeros((k,), np.float32)
            past = history[-k:] if k else []
            if past:
                mem[k - len(past):] = np.stack(past)
                mask[k - len(past):] = 1.0
            probs, emb, gate = runner(single_feeds(utts[i], mem, mask))
            for key, value in (("probs", probs), ("utt_emb", emb), ("gate", gate)):
                if key not in res:
                    res[key] = np.zeros((n, value.shape[1]), np.float32)
                res[key][i] = value[0]
            res["memory"][i], res["memory_mask"][i] = mem, mask
            history.append(emb[0].astype(np.float32))
            bar.update(1)
    bar.close()
    return res


def take_dialogues(records, n: int, *, splits: Sequence[str] | None = None, seed: int | None = None) -> list:
    """Whole dialogues (in order) from ``records`` until ``n`` utterances; the last one is cut to fit.

    ``splits``: preference order of splits to draw from (the first non-empty one is used;
    None = all records). ``seed``: shuffle the dialogues (seeded) instead of file order.
    Returns the chosen records, dialogues contiguous and in position order.
    """
    import random

    from hbaf.train import group_dialogues

    pool = list(records)
    if splits:
        for s in splits:
            chosen = [r for r in records if r.split == s]
            if chosen:
                pool = chosen
                break
    groups = group_dialogues(pool)
    if seed is not None:
        random.Random(seed).shuffle(groups)
    out = []
    for g in groups:
        if len(out) >= n:
            break
        out.extend(pool[i] for i in g[: n - len(out)])
    return out


def dialogue_groups(records) -> list[list[int]]:
    from hbaf.train import group_dialogues

    return group_dialogues(list(records))


def load_utterances(records, tokenizer, *, cache_file: str | os.PathLike | None = None, workers: int | None = None) -> list[Utterance]:
    """Log-mel (hbaf.features, via the shared feature cache) and token ids for each record."""
    from hbaf.train import FeatureStore

    store = FeatureStore(list(records), cache_file, workers=workers)
    ids = tokenize([r.text for r in records], tokenizer)
    return [Utterance(np.asarray(store[i], dtype=np.float32), ids[i]) for i in range(len(records))]


def subset_cache_file(manifest: str | os.PathLike, records, tag: str) -> Path:
    """A feature-cache file for a subset of a manifest (never clobbers the whole-manifest cache)."""
    import hashlib

    from hbaf.train import feature_cache_path

    h = hashlib.sha256("\n".join(r.audio for r in records).encode()).hexdigest()[:12]
    base = feature_cache_path(manifest)
    return base.with_name(f"{Path(manifest).stem}.{tag}-{h}.features.npz")


# ----------------------------------------------------------------------------- parity


def parity(checkpoint_dir: str | os.PathLike, onnx_path: str | os.PathLike, manifest: str | os.PathLike, n: int = 64,
           *, batch: int = 4, threads: int = 2) -> dict:
    """PyTorch vs ONNX Runtime (CPU) on ``n`` real utterances of ``manifest``.

    Sequential (batch 1): each backend runs whole dialogues with its own ``utt_emb`` as the
    dialogue memory, as the runtime does. Batched: the same utterances in padded batches of
    ``batch`` (different T and L per row, the memory each one saw in PyTorch's sequential run),
    compared with PyTorch on the same batch and with ONNX Runtime's own batch-1 result, which
    shows that the masks make padding irrelevant.
    """
    from hbaf.checkpoint import load_checkpoint, tokenizer_path
    from hbaf.data.manifest import load_manifest
    from hbaf.features import features_for
    from hbaf.text import Tokenizer

    if n < 1:
        raise HBAFError(f"--parity-n must be >= 1, got {n}")
    model, _ = load_checkpoint(checkpoint_dir)
    info = model_info(onnx_path)
    if list(info["labels"]) != list(model.labels) or int(info["memory_dim"]) != model.memory_dim:
        raise HBAFError(f"{onnx_path} was not exported from {checkpoint_dir} (labels or width differ); export it again from this checkpoint")
    tok = Tokenizer(tokenizer_path(checkpoint_dir), model.cfg.max_tokens)
    records = take_dialogues(load_manifest(manifest), n)
    from tqdm import tqdm

    feats = [features_for(r.audio) for r in tqdm(records, desc="log-mel", unit="utt", leave=False)]
    ids = tokenize([r.text for r in records], tok)
    utts = [Utterance(f, i) for f, i in zip(feats, ids)]
    groups = dialogue_groups(records)
    k, d = model.cfg.context_size, model.memory_dim
    torch_run, ort_run = TorchRunner(model), OrtRunner(onnx_path, threads=threads)
    ref = run_dialogues(torch_run, groups, utts, k, d, desc="parity: PyTorch")
    got = run_dialogues(ort_run, groups, utts, k, d, desc="parity: ONNX Runtime")

    batched_vs_torch = batched_vs_single = 0.0
    batched_agree = 0
    order = list(range(len(utts)))
    for s in range(0, len(order), batch):
        sel = order[s: s + batch]
        feeds = batch_feeds([utts[i] for i in sel], ref["memory"][sel], ref["memory_mask"][sel])
        p_t = torch_run(feeds)[0]
        p_o = ort_run(feeds)[0]
        batched_vs_torch = max(batched_vs_torch, float(np.abs(p_t - p_o).max()))
        batched_agree += int((p_t.argmax(1) == p_o.argmax(1)).sum())
        singles = np.concatenate([ort_run(single_feeds(utts[i], ref["memory"][i], ref["memory_mask"][i]))[0] for i in sel])
        batched_vs_single = max(batched_vs_single, float(np.abs(singles - p_o).max()))
    lengths = [u.feats.shape[0] for u in utts]
    return {
        "onnx": str(onnx_path),
        "checkpoint": str(checkpoint_dir),
        "manifest": str(manifest),
        "n": len(utts),
        "dialogues": len(groups),
        "frames_min_max": [int(min(lengths)), int(max(lengths))],
        "sequential_max_abs_prob_diff": float(np.abs(ref["probs"] - got["probs"]).max()),
        "sequential_top1_agreement": float((ref["probs"].argmax(1) == got["probs"].argmax(1)).mean()),
        "sequential_max_utt_emb_diff": float(np.abs(ref["utt_emb"] - got["utt_emb"]).max()),
        "sequential_max_gate_diff": float(np.abs(ref["gate"] - got["gate"]).max()),
        "batch_size": batch,
        "batched_max_abs_prob_diff_vs_torch": batched_vs_torch,
        "batched_top1_agreement_vs_torch": batched_agree / max(1, len(utts)),
        "batched_vs_batch1_max_abs_prob_diff": batched_vs_single,
    }
