"""PyTorch checkpoint -> ONNX graph following the export contract (hbaf/contract.py).

Two graphs of one model, the same I/O: ``contract`` (standard opset-17 operators, what
TensorRT parses) and ``ort-cpu`` (ONNX Runtime's fused CPU kernels, opset 18; export/ort_cpu.py).

Exporter choice. The torch.export-based exporter (``dynamo=True``, torch >= 2.5 with
onnxscript) is tried first: its graph is about half the size of the TorchScript
exporter's (no Constant/Identity/Shape->Gather->Unsqueeze chains) and it names the
dynamic axes from ``torch.export.Dim``. It emits opset 18; we convert to the requested
opset (17 by default, the newest TensorRT 8.6 parses) with ``onnx.version_converter``.
The TorchScript exporter is the fallback (older torch, no onnxscript, or an export
failure). After either, the int32 ``input_ids`` feed the word-embedding Gather directly
(ONNX Gather takes int32 indices), without the int32 -> int64 Cast that ``.long()`` in
the model leaves behind (export/graph_ops.py).

The exported file carries metadata key ``hbaf``: the model's ``ModelSpec`` (labels, K, D,
feature format, limits, text encoder) plus where it came from (package version, source
checkpoint and its sha256, tokenizer sha256, exporter, opset, graph kind, torch version, and
the model config for information). The checkpoint's ``tokenizer.json`` is copied next to it
(the runtime looks for it there). Before the file replaces ``out``, it is checked with
onnx.checker, the TensorRT operator check (contract graph) and an ONNX Runtime run compared
with PyTorch on random contract feeds (export/parity.py).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_runtime.backends import TorchBackend
from export.graph_ops import convert_opset, drop_index_casts, name_io_dims
from hbaf import __version__
from hbaf.contract import (
    DYNAMIC_AXES,
    GRAPH_CONTRACT,
    GRAPH_ORT_CPU,
    GRAPHS,
    INPUT_NAMES,
    INPUTS,
    OUTPUT_SPECS,
    TOKENIZER_FILE,
    ModelSpec,
    first_line,
    save_onnx,
    set_onnx_metadata,
)
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, quiet_output
from hbaf.onnx_graph import add_contrib_types

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
MAX_BATCH = 4096  # the dynamic batch axis' upper bound for torch.export


def export_onnx(checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = 17, check: bool = True,
                exporter: str = "auto", graph: str = GRAPH_CONTRACT) -> Path:
    """Export a checkpoint to ONNX following the contract; returns the written path.

    ``exporter``: "auto" (torch.export-based first, TorchScript as fallback), "dynamo" or
    "torchscript". ``check``: onnx.checker (full), the TensorRT compatibility check (contract
    graph) and ONNX Runtime compared with PyTorch. ``graph``: "contract" (standard operators,
    what TensorRT parses) or "ort-cpu" (the same model with ONNX Runtime's fused CPU kernels,
    opset 18; see export/ort_cpu.py).
    """
    import torch

    from hbaf.checkpoint import WEIGHTS, read_meta, sha256_file, tokenizer_path

    if exporter not in EXPORTERS:
        raise HBAFError(f"unknown exporter '{exporter}'; choose {', '.join(EXPORTERS)}")
    if graph not in GRAPHS:
        raise HBAFError(f"unknown graph '{graph}'; choose {' or '.join(GRAPHS)}")
    if graph == GRAPH_ORT_CPU:
        if exporter == "torchscript":
            raise HBAFError("the ort-cpu graph needs the torch.export-based exporter; drop --exporter torchscript")
        exporter, opset = "dynamo", max(opset, 18)
    if not 13 <= opset <= 20:
        raise HBAFError(f"opset {opset} is outside 13..20 (per-channel Q/DQ needs >= 13, TensorRT 10 parses <= 20); use --opset 17")
    reference = TorchBackend(checkpoint_dir)  # loads and verifies the checkpoint
    ckpt, model, spec = reference.path, reference.model, reference.spec
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise HBAFError(f"output {out} should end in .onnx (the runtime picks the backend by extension); pass e.g. {out.with_suffix('.onnx')}")
    example = _example_inputs(spec, model.cfg.vocab_size)
    t0 = time.perf_counter()
    if graph == GRAPH_ORT_CPU:
        from export import ort_cpu

        proto, used = _export_graph(ort_cpu.fused_copy(model), example, opset, spec, exporter,
                                    translations=ort_cpu.translation_table())
    else:
        proto, used = _export_graph(model, example, opset, spec, exporter)
    _check_output_names(proto, spec)
    drop_index_casts(proto)
    convert_opset(proto, opset)
    name_io_dims(proto, spec)
    if graph == GRAPH_ORT_CPU:
        proto = ort_cpu.fuse_transformer_ops(proto)
        add_contrib_types(proto)
    tok_file = tokenizer_path(ckpt)
    meta = read_meta(ckpt)
    provenance = {
        "hbaf_version": __version__,
        "source_checkpoint": str(ckpt.resolve()),
        "source_checkpoint_sha256": meta.get("weights_sha256") or sha256_file(ckpt / WEIGHTS),
        "tokenizer_sha256": sha256_file(tok_file) if tok_file.exists() else None,
        "exporter": used,
        "opset": opset,
        "graph": graph,
        "torch_version": torch.__version__.split("+")[0],
        "config": model.cfg.to_dict(),
    }
    set_onnx_metadata(proto, export_metadata(spec, provenance))
    proto.producer_name = "hbaf-edge"
    proto.producer_version = __version__
    proto.graph.name = "hbaf"
    tok_dst = out.parent / TOKENIZER_FILE
    if tok_file.exists():
        _check_tokenizer_slot(tok_file, tok_dst)
    else:
        log.warning("checkpoint %s has no %s; the runtime will fall back to the text encoder's tokenizer", ckpt, TOKENIZER_FILE)

    def verify(path: Path) -> None:  # runs on the written file before it replaces ``out``
        from export.parity import smoke_parity

        _check_graph(path, full=graph == GRAPH_CONTRACT)
        if graph == GRAPH_CONTRACT:
            _check_trt(path)
        smoke_parity(reference, path, vocab_size=model.cfg.vocab_size)

    save_onnx(proto, out, verify=verify if check else None)
    if tok_file.exists():
        _copy_tokenizer(tok_file, tok_dst)
    log.info("exported %s with the %s exporter in %.1fs (%.1f MB, opset %d)", out, used, time.perf_counter() - t0,
             out.stat().st_size / 1e6, opset)
    return out


def export_metadata(spec: ModelSpec, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The ``hbaf`` metadata entry: the ModelSpec (what consumers read) plus provenance keys."""
    clash = sorted(set(provenance) & set(spec.to_metadata()))
    if clash:
        raise HBAFError(f"provenance keys {clash} would overwrite the model spec; this is an export bug")
    return {**spec.to_metadata(), **provenance}


def _example_inputs(spec: ModelSpec, vocab_size: int) -> tuple:
    """Batch 2 with padding in the second row, odd frame count: nothing specializes to 1 or to even T."""
    import torch

    g = torch.Generator().manual_seed(0)
    b, t, length, k = 2, 203, 11, spec.context_size
    feats = torch.randn(b, t, spec.feature_dim, generator=g)
    fmask = torch.ones(b, t)
    fmask[1, 150:] = 0
    ids = torch.randint(1, vocab_size, (b, length), generator=g, dtype=torch.int64).to(torch.int32)
    imask = torch.ones(b, length, dtype=torch.int32)
    imask[1, 7:] = 0
    memory = torch.randn(b, k, spec.memory_dim, generator=g)
    mmask = torch.zeros(b, k)
    mmask[0, k // 2:] = 1
    return feats, fmask, ids, imask, memory, mmask


def _export_graph(model, example: tuple, opset: int, spec: ModelSpec, exporter: str, translations: dict | None = None):
    failures: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            return _export_dynamo(model, example, opset, spec, translations), "dynamo"
        except Exception as err:  # missing onnxscript, old torch, an unsupported construct
            why = first_line(err)
            failures.append(f"dynamo: {why}")
            if exporter == "dynamo":
                raise HBAFError(f"the torch.export-based ONNX exporter failed ({why}); pip install onnxscript, use torch>=2.5, or pass --exporter torchscript") from err
            log.warning("torch.export-based exporter failed (%s); falling back to the TorchScript exporter", why)
    try:
        return _export_torchscript(model, example, opset, spec), "torchscript"
    except Exception as err:
        failures.append(f"torchscript: {first_line(err)}")
        raise HBAFError(f"ONNX export failed ({'; '.join(failures)}); install a torch with an ONNX exporter (pip install onnxscript) "
                        "and check the checkpoint") from err


def _export_dynamo(model, example: tuple, opset: int, spec: ModelSpec, translations: dict | None = None):
    import torch

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise RuntimeError(f"torch {torch.__version__} has no dynamo=True ONNX export")
    import onnxscript  # noqa: F401  (the exporter needs it; fail early with a clear reason)

    dims = {
        "B": torch.export.Dim(DYNAMIC_AXES["B"], min=1, max=MAX_BATCH),
        "T": torch.export.Dim(DYNAMIC_AXES["T"], min=1, max=spec.max_frames),
        "L": torch.export.Dim(DYNAMIC_AXES["L"], min=1, max=spec.max_tokens),
    }
    dynamic = {s.name: {i: dims[a] for i, a in enumerate(s.axes) if a in dims} for s in INPUTS}
    # The exporter builds opset 18 natively; a lower target is converted afterwards (convert_opset).
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
            model, example, input_names=list(INPUT_NAMES), output_names=list(spec.outputs),
            opset_version=max(opset, 18), dynamo=True, dynamic_shapes=dynamic, **optional,
        )
        if "optimize" not in params and hasattr(program, "optimize"):
            program.optimize()
    return program.model_proto


def _export_torchscript(model, example: tuple, opset: int, spec: ModelSpec):
    import onnx
    import torch

    specs = INPUTS + tuple(OUTPUT_SPECS[n] for n in spec.outputs)
    axes = {s.name: {i: DYNAMIC_AXES[a] for i, a in enumerate(s.axes) if a in DYNAMIC_AXES} for s in specs}
    kwargs = dict(input_names=list(INPUT_NAMES), output_names=list(spec.outputs), dynamic_axes=axes,
                  opset_version=opset, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with tempfile.TemporaryDirectory(prefix="hbaf-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _quiet():
            torch.onnx.export(model, example, str(path), **kwargs)
        return onnx.load(str(path))


def _check_output_names(proto, spec: ModelSpec) -> None:
    """The graph's outputs are the model's (``spec.outputs``: the contract's three, then the uni-modal
    heads it has), in that order."""
    got = [o.name for o in proto.graph.output]
    if got != list(spec.outputs):
        raise HBAFError(f"the exported graph's outputs are {got}, the model's are {list(spec.outputs)}; this is an export bug")


def _quiet():
    """The exporters print progress and deprecation chatter; keep it in the debug log."""
    return quiet_output(("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir"), "exporter")


def _check_graph(path: Path, full: bool) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=full)  # the path form also handles > 2 GB models
    except onnx.checker.ValidationError as err:
        raise HBAFError(f"the exported graph fails onnx.checker ({first_line(err)}); this is an export bug, try --exporter torchscript") from err


def _check_trt(path: Path) -> None:
    from export.trt_compat import check_onnx_for_tensorrt

    problems = check_onnx_for_tensorrt(path)
    for p in problems:
        log.warning("TensorRT compatibility: %s", p)
    if not problems:
        log.info("TensorRT compatibility check: OK")


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
