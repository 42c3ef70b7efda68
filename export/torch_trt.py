"""Second engine path: compile the PyTorch student directly with Torch-TensorRT (dynamo IR).

The module must take the six contract tensors positionally — ``audio_feats, audio_mask,
input_ids, attention_mask, memory, memory_mask`` — and return ``(probs, utt_emb, gate)``,
the same module ``export/onnx`` traces.

Why ``torch.export`` first and then ``torch_tensorrt.dynamo.compile`` rather than
``torch_tensorrt.compile(model, ir="dynamo", inputs=...)``: the latter traces every
``torch_tensorrt.Input`` with its own symbolic sizes, and the HBAF graph ties them together
(batch of every input, T of audio_feats/audio_mask, L of input_ids/attention_mask), which
``torch.export`` rejects as a constraint violation on the Torch-TensorRT versions JetPack
ships. One dim per axis, shared across inputs, says exactly that (``Dim.AUTO`` with the
profile's range on torch >= 2.7, a named ``Dim`` before); the ``Input`` min/opt/max ranges
then tell TensorRT the same profile as ``export.engine``.

INT8 uses NVIDIA Model Optimizer (``nvidia-modelopt``): ``mtq.quantize`` with a calibration
loop over real feature batches inserts fake-quantizers on Linear/Conv inputs and weights
(the GEMMs; LayerNorm, Softmax, masks and the gate stay in higher precision). Calibration
runs anywhere, CPU included; exporting the quantized model needs CUDA, because only there
do the quantizers lower to the ``tensorrt::quantize_op`` that Torch-TensorRT converts to Q/DQ.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Iterable, Sequence

from export.engine import PRECISIONS, Profiles
from export.trt_compat import INPUT_NAMES
from hbaf.errors import HBAFError
from hbaf.features import N_MELS
from hbaf.io import atomic_path

log = logging.getLogger(__name__)



def _import_torch_tensorrt():
    try:
        import torch_tensorrt  # noqa: PLC0415
    except ImportError as err:
        raise HBAFError(
            "torch-tensorrt is not installed: on x86 pip install .[jetson]; on Jetson use the torch-tensorrt wheel "
            "matching NVIDIA's Jetson torch, or build a TensorRT engine from ONNX with python -m export.engine"
        ) from err
    return torch_tensorrt


def _import_modelopt():
    try:
        import modelopt.torch.quantization as mtq  # noqa: PLC0415
    except ImportError as err:
        raise HBAFError("nvidia-modelopt is not installed: pip install nvidia-modelopt (needed for --precision int8)") from err
    return mtq


def _example_size(lo: int, opt: int, hi: int) -> int:
    """A tracing size inside [lo, hi] that is not 0/1 when the axis is dynamic (torch.export specializes 0 and 1)."""
    if lo == hi or opt >= 2:
        return opt
    return min(2, hi)


def example_inputs(profiles: Profiles, context_size: int, memory_dim: int, device: str = "cpu") -> tuple:
    """Six tracing tensors in contract order, sized from the profile (valid masks, in-vocabulary ids)."""
    import torch  # noqa: PLC0415

    b = _example_size(profiles.min.batch, profiles.opt.batch, profiles.max.batch)
    t = _example_size(profiles.min.frames, profiles.opt.frames, profiles.max.frames)
    ln = _example_size(profiles.min.tokens, profiles.opt.tokens, profiles.max.tokens)
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, t, N_MELS, generator=gen).to(device),
        torch.ones(b, t).to(device),
        torch.randint(1000, 2000, (b, ln), generator=gen, dtype=torch.int32).to(device),
        torch.ones(b, ln, dtype=torch.int32).to(device),
        torch.randn(b, context_size, memory_dim, generator=gen).to(device),
        torch.ones(b, context_size).to(device),
    )


def _dynamic_dim(name: str, lo: int, hi: int):
    """A dynamic axis for torch.export: ``Dim.AUTO(min, max)`` where torch has it (>= 2.7), else a named ``Dim``.

    ``Dim.AUTO`` lets torch.export infer which inputs share an axis and turn guards it cannot
    prove symbolically (the HBAF audio subsampling gives ceil(ceil(T/2)/2) two ways) into
    run-time checks; a named ``Dim`` rejects such guards as constraint violations.
    """
    from torch.export import Dim  # noqa: PLC0415

    hint = getattr(Dim, "AUTO", None)
    if callable(hint):
        try:
            return hint(min=lo, max=hi)
        except TypeError:  # a torch where AUTO takes no range
            pass
    return Dim(name, min=lo, max=hi)


def dynamic_shapes(profiles: Profiles) -> tuple:
    """``torch.export`` dynamic shapes in contract order: one dim per axis, shared by every input that has it."""

    def dim(name: str, lo: int, hi: int):
        return None if lo == hi else _dynamic_dim(name, lo, hi)

    batch = dim("batch", profiles.min.batch, profiles.max.batch)
    frames = dim("frames", profiles.min.frames, profiles.max.frames)
    tokens = dim("tokens", profiles.min.tokens, profiles.max.tokens)

    def axes(*dims):  # Dim (or None when static) per leading axis -> {axis: Dim}, None if all static
        spec = {axis: d for axis, d in enumerate(dims) if d is not None}
        return spec or None

    return (
        axes(batch, frames),  # audio_feats [B, T, 80]
        axes(batch, frames),  # audio_mask [B, T]
        axes(batch, tokens),  # input_ids [B, L]
        axes(batch, tokens),  # attention_mask [B, L]
        axes(batch),  # memory [B, K, D]
        axes(batch),  # memory_mask [B, K]
    )


def trt_inputs(profiles: Profiles, context_size: int, memory_dim: int) -> list:
    """``torch_tensorrt.Input`` min/opt/max specs for the six inputs (the same profile as export.engine)."""
    import torch  # noqa: PLC0415

    torch_tensorrt = _import_torch_tensorrt()
    shapes = profiles.input_shapes(context_size, memory_dim)
    dtypes = {"input_ids": torch.int32, "attention_mask": torch.int32}
    return [
        torch_tensorrt.Input(min_shape=shapes[n][0], opt_shape=shapes[n][1], max_shape=shapes[n][2],
                             dtype=dtypes.get(n, torch.float32), name=n)
        for n in INPUT_NAMES
    ]


def export_student(model, profiles: Profiles, context_size: int, memory_dim: int, device: str = "cpu"):
    """``torch.export`` the student with dynamic B/T/L (runs on CPU too; the step Torch-TensorRT compiles)."""
    import torch  # noqa: PLC0415

    args = example_inputs(profiles, context_size, memory_dim, device)
    try:
        with torch.no_grad():
            return torch.export.export(model, args, dynamic_shapes=dynamic_shapes(profiles), strict=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HBAFError(
            f"torch.export could not trace the student with dynamic batch/frames/tokens ({first}); with torch < 2.7 "
            "give frames a fixed size (equal min/opt/max FRAMES) or build from ONNX with python -m export.engine"
        ) from err


def quantize_student(model, calib_batches: Iterable[Sequence], *, progress: bool = True):
    """INT8 post-training quantization with nvidia-modelopt: returns a calibrated copy of ``model``.

    ``calib_batches`` yields the six contract tensors per batch (real utterances from a
    manifest, through hbaf.features); the original model is left untouched.
    """
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    mtq = _import_modelopt()
    batches = list(calib_batches)
    if not batches:
        raise HBAFError("INT8 calibration got no batches; pass real utterances (e.g. 100-500 from the train manifest)")
    qmodel = copy.deepcopy(model).eval()

    def forward_loop(m) -> None:
        with torch.no_grad():
            for batch in tqdm(batches, desc="calibrate", disable=not progress):
                m(*batch)

    return mtq.quantize(qmodel, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)


def compile_student(
    model,
    profiles: Profiles | None = None,
    *,
    context_size: int,
    memory_dim: int,
    precision: str = "fp16",
    out: str | Path | None = None,
    calib_batches: Iterable[Sequence] | None = None,
    workspace_mb: int = 1024,
    device: int = 0,
):
    """Compile ``model`` with Torch-TensorRT (dynamo IR, dynamic B/T/L); save to ``out`` as an exported program.

    Returns the compiled ``torch.fx.GraphModule``. ``precision`` is fp32, fp16 or int8 (int8
    needs ``calib_batches`` and nvidia-modelopt).
    """
    import torch  # noqa: PLC0415

    if precision not in PRECISIONS:
        raise HBAFError(f"precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
    if precision == "int8" and calib_batches is None:
        raise HBAFError("precision int8 needs calib_batches (real utterances) for modelopt calibration")
    torch_tensorrt = _import_torch_tensorrt()
    if not torch.cuda.is_available():
        raise HBAFError("Torch-TensorRT needs a CUDA GPU and a CUDA build of torch; run this on the Jetson")
    profiles = profiles or Profiles()
    cuda = f"cuda:{device}"
    model = model.eval().to(cuda)

    if precision == "int8":
        from modelopt.torch.quantization.utils import export_torch_mode  # noqa: PLC0415

        calib = [tuple(t.to(cuda) for t in batch) for batch in calib_batches]
        model = quantize_student(model, calib)
        with export_torch_mode():
            program = export_student(model, profiles, context_size, memory_dim, cuda)
        enabled = {torch.int8}
    else:
        program = export_student(model, profiles, context_size, memory_dim, cuda)
        enabled = {torch.float16} if precision == "fp16" else {torch.float32}

    log.info("compiling the student with Torch-TensorRT %s (%s)", torch_tensorrt.__version__, precision)
    compiled = torch_tensorrt.dynamo.compile(
        program,
        inputs=trt_inputs(profiles, context_size, memory_dim),
        enabled_precisions=enabled,
        workspace_size=workspace_mb << 20,
        min_block_size=1,
    )
    if out is not None:
        example = list(example_inputs(profiles, context_size, memory_dim, cuda))
        with atomic_path(out) as tmp:
            torch_tensorrt.save(compiled, str(tmp), output_format="exported_program", inputs=example)
        log.info("saved %s", out)
    return compiled


def load_compiled(path: str | Path):
    """Load a program saved by ``compile_student``; returns a callable module (runs on CUDA)."""
    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise HBAFError(f"compiled student {path} is missing or empty; compile it with export.torch_trt.compile_student")
    _import_torch_tensorrt()  # registers the TensorRT engine op the program calls
    try:
        return torch.export.load(str(path)).module()
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HBAFError(f"{path} is not a Torch-TensorRT exported program for this torch/TensorRT ({first}); compile it again on this device") from err
