"""Second engine path: compile the PyTorch student directly with Torch-TensorRT (dynamo IR).

The module must take the six contract tensors positionally — ``audio_feats, audio_mask,
input_ids, attention_mask, memory, memory_mask`` — and return the model's outputs in
``spec.outputs`` order: ``(probs, utt_emb, gate)`` and then the uni-modal heads it has
(``audio_probs``, ``text_probs``), the same module ``export/onnx`` traces. ``named_outputs`` turns
what the compiled program returns back into the contract's names.

Why ``torch.export`` first and then ``torch_tensorrt.dynamo.compile`` rather than
``torch_tensorrt.compile(model, ir="dynamo", inputs=...)``: the latter traces every
``torch_tensorrt.Input`` with its own symbolic sizes, and the HBAF graph ties them together
(batch of every input, T of audio_feats/audio_mask, L of input_ids/attention_mask), which
``torch.export`` rejects as a constraint violation on the Torch-TensorRT versions JetPack
ships. One dim per axis, shared across inputs, says exactly that (``Dim.AUTO`` with the
profile's range on torch >= 2.7, a named ``Dim`` before); the ``Input`` min/opt/max ranges
then tell TensorRT the same profile as ``hbaf-export engine`` (``hbaf.contract.Profiles``).

INT8 uses NVIDIA Model Optimizer (``nvidia-modelopt``): ``mtq.quantize`` with a calibration
loop over real feature batches inserts fake-quantizers on Linear/Conv inputs and weights
(the GEMMs; LayerNorm, Softmax, masks and the gate stay in higher precision). Calibration
runs anywhere, CPU included; exporting the quantized model needs CUDA, because only there
do the quantizers lower to the ``tensorrt::quantize_op`` that Torch-TensorRT converts to Q/DQ.
``calibration_batches`` draws those batches as the ONNX calibration does: whole dialogues of a
manifest's train split, each utterance with the dialogue memory the FP32 model produced for it
on the runtime's offline path.

Which path works where (JetPack ships older torch than the student's export needs):

- torch >= 2.7 (x86 with a current CUDA torch; a Jetson with a newer NVIDIA wheel): dynamic
  batch, frames and tokens, as above;
- torch < 2.7 (JetPack 6.1's NVIDIA wheel is 2.5; torch-tensorrt is built from source there):
  named ``Dim`` objects cannot express the frame-axis guards, so a dynamic-frame profile is
  refused in one line before anything is traced; a profile with fixed frames (equal
  min/opt/max FRAMES) still exports (checked here with the named-``Dim`` form that old torch
  uses), and ``hbaf-export engine`` (ONNX -> TensorRT) takes the dynamic profile on any torch.

The compiled program is saved with its dynamic shapes: ``torch_tensorrt.save`` re-traces a
module at the example inputs on current releases unless it gets ``dynamic_shapes`` (or
``retrace=False`` on releases without that argument), and a re-traced program would accept
only the example's shapes. For INT8, export and compile both run inside modelopt's
``export_torch_mode()``, as NVIDIA's PTQ example does.

Command line: ``hbaf-export torch-trt --checkpoint DIR --precision fp16 --out student.fp16.ep``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_runtime.backends import Backend
from edge_runtime.dialogues import DialogueSet, calibration_records
from hbaf.contract import (
    INPUT_DTYPES,
    INPUT_NAMES,
    INPUTS,
    PRECISIONS,
    ModelSpec,
    Profiles,
    batch_feeds,
    first_line,
)
from hbaf.errors import HBAFError
from hbaf.io import atomic_path

log = logging.getLogger(__name__)


def import_torch_tensorrt():
    """``import torch_tensorrt`` or a one-line HBAFError saying how to install it."""
    try:
        import torch_tensorrt
    except ImportError as err:
        raise HBAFError(
            "torch-tensorrt is not installed: on x86 pip install .[jetson]; on Jetson use the torch-tensorrt wheel "
            "matching NVIDIA's Jetson torch, or build a TensorRT engine from ONNX with hbaf-export engine"
        ) from err
    return torch_tensorrt


def _import_modelopt():
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as err:
        raise HBAFError("nvidia-modelopt is not installed: pip install nvidia-modelopt (needed for --precision int8)") from err
    return mtq


def _example_size(lo: int, opt: int, hi: int) -> int:
    """A tracing size inside [lo, hi] that is not 0/1 when the axis is dynamic (torch.export specializes 0 and 1)."""
    if lo == hi or opt >= 2:
        return opt
    return min(2, hi)


def example_inputs(profiles: Profiles, spec: ModelSpec, device: str = "cpu") -> tuple:
    """Six tracing tensors in contract order, sized from the profile (valid masks, in-vocabulary ids)."""
    import torch

    b = _example_size(profiles.min.batch, profiles.opt.batch, profiles.max.batch)
    t = _example_size(profiles.min.frames, profiles.opt.frames, profiles.max.frames)
    ln = _example_size(profiles.min.tokens, profiles.opt.tokens, profiles.max.tokens)
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, t, spec.feature_dim, generator=gen).to(device),
        torch.ones(b, t).to(device),
        torch.randint(1000, 2000, (b, ln), generator=gen, dtype=torch.int32).to(device),
        torch.ones(b, ln, dtype=torch.int32).to(device),
        torch.randn(b, spec.context_size, spec.memory_dim, generator=gen).to(device),
        torch.ones(b, spec.context_size).to(device),
    )


def torch_version() -> tuple[int, int]:
    import torch

    parts = str(torch.__version__).split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def auto_dims_available() -> bool:
    """Whether this torch has ``Dim.AUTO`` taking a range (torch >= 2.7)."""
    from torch.export import Dim

    hint = getattr(Dim, "AUTO", None)
    if not callable(hint):
        return False
    try:
        hint(min=1, max=2)
    except TypeError:  # a torch where AUTO takes no range
        return False
    return True


def check_torch_for_profile(profiles: Profiles, version: tuple[int, int], auto_dims: bool) -> None:
    """Refuse, in one line and before tracing, a dynamic-frame profile on a torch without ``Dim.AUTO`` ranges."""
    if profiles.min.frames != profiles.max.frames and not auto_dims:
        raise HBAFError(
            f"torch {version[0]}.{version[1]} cannot export the student with dynamic frames (needs torch >= 2.7; JetPack 6.1's "
            "NVIDIA wheel is 2.5): build the engine from ONNX with `hbaf-export engine --onnx MODEL.onnx`, or give frames a "
            "fixed size here (equal FRAMES in --min/--opt/--max, e.g. --min 1,500,4 --opt 1,500,32 --max 4,500,128)"
        )


def _dynamic_dim(name: str, lo: int, hi: int, auto: bool):
    """A dynamic axis for torch.export: ``Dim.AUTO(min, max)`` where torch has it (>= 2.7), else a named ``Dim``.

    ``Dim.AUTO`` lets torch.export infer which inputs share an axis and turn guards it cannot
    prove symbolically (the HBAF audio subsampling gives ceil(ceil(T/2)/2) two ways) into
    run-time checks; a named ``Dim`` rejects such guards as constraint violations.
    """
    from torch.export import Dim

    return Dim.AUTO(min=lo, max=hi) if auto else Dim(name, min=lo, max=hi)


def dynamic_shapes(profiles: Profiles, auto: bool | None = None) -> tuple:
    """``torch.export`` dynamic shapes in contract order: one dim per axis, shared by every input that has it
    (``auto``: ``Dim.AUTO`` ranges; None = where this torch has them, else named dims as older torch needs)."""
    auto = auto_dims_available() if auto is None else auto

    def dim(name: str, lo: int, hi: int):
        return None if lo == hi else _dynamic_dim(name, lo, hi, auto)

    dims = {
        "B": dim("batch", profiles.min.batch, profiles.max.batch),
        "T": dim("frames", profiles.min.frames, profiles.max.frames),
        "L": dim("tokens", profiles.min.tokens, profiles.max.tokens),
    }
    # {axis index: Dim} per input (None when every axis of it is static)
    return tuple({i: dims[a] for i, a in enumerate(s.axes) if dims.get(a) is not None} or None for s in INPUTS)


def trt_inputs(profiles: Profiles, spec: ModelSpec) -> list:
    """``torch_tensorrt.Input`` min/opt/max specs for the six inputs (the same profile as engines from ONNX)."""
    import torch

    torch_tensorrt = import_torch_tensorrt()
    shapes = profiles.input_shapes(spec)
    dtypes = {"float32": torch.float32, "int32": torch.int32}
    return [
        torch_tensorrt.Input(min_shape=shapes[n][0], opt_shape=shapes[n][1], max_shape=shapes[n][2],
                             dtype=dtypes[INPUT_DTYPES[n].name], name=n)
        for n in INPUT_NAMES
    ]


def export_student(model, profiles: Profiles, spec: ModelSpec, device: str = "cpu", *, auto: bool | None = None):
    """``torch.export`` the student with dynamic B/T/L (runs on CPU too; the step Torch-TensorRT compiles).
    ``auto``: as ``dynamic_shapes`` (None: what this torch supports)."""
    import torch

    auto = auto_dims_available() if auto is None else auto
    check_torch_for_profile(profiles, torch_version(), auto)
    args = example_inputs(profiles, spec, device)
    try:
        with torch.no_grad():
            program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes(profiles, auto), strict=False)
    except Exception as err:
        raise HBAFError(
            f"torch.export could not trace the student with dynamic batch/frames/tokens ({first_line(err)}); with torch < 2.7 "
            "give frames a fixed size (equal min/opt/max FRAMES) or build from ONNX with hbaf-export engine"
        ) from err
    returned = len(program.graph_signature.user_outputs)
    if returned != len(spec.outputs):
        raise HBAFError(f"the traced student returns {returned} outputs, its spec lists {list(spec.outputs)}; "
                        "the checkpoint and its config disagree: export it from the checkpoint folder")
    return program


def named_outputs(values: Sequence, spec: ModelSpec) -> dict:
    """What a compiled (or eager) student returns, by the contract's names (``spec.outputs`` order)."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(values) != len(spec.outputs):
        raise HBAFError(f"the compiled student returned {len(values)} outputs, its spec lists {list(spec.outputs)}; "
                        "compile it again from the checkpoint with `hbaf-export torch-trt`")
    return dict(zip(spec.outputs, values))


def calibration_batches(backend: Backend, manifest: str | os.PathLike, *, num: int = 256, batch: int = 8, seed: int = 0,
                        workers: int | None = None) -> list[tuple]:
    """INT8 calibration batches for ``quantize_student``: ``num`` utterances of whole dialogues (seeded;
    the train split, else dev, else test) of ``manifest``, ``batch`` padded utterances per batch in
    contract order, each with the dialogue memory ``backend`` (the FP32 model) produced for it on
    the runtime's offline path."""
    import torch

    if num < 1 or batch < 1:
        raise HBAFError(f"--num ({num}) and the calibration batch size ({batch}) must be >= 1")
    data = DialogueSet.load(manifest, calibration_records(manifest, num, seed), "calib", workers,
                           kind=backend.spec.feature_kind)
    tokenizer = backend.tokenizer()
    seen = data.run(backend, tokenizer, desc="calibration: FP32 dialogue memory")
    batches = []
    for start in range(0, len(data), batch):
        sel = list(range(start, min(start + batch, len(data))))
        feeds = batch_feeds(backend.spec, [data.feats[i] for i in sel], [tokenizer([data.texts[i]])[0][0] for i in sel],
                            seen["memory"][sel], seen["memory_mask"][sel])
        batches.append(tuple(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
    return batches


def quantize_student(model, calib_batches: Iterable[Sequence], *, progress: bool = True):
    """INT8 post-training quantization with nvidia-modelopt: returns a calibrated copy of ``model``.

    ``calib_batches`` yields the six contract tensors per batch (real utterances from a
    manifest, through hbaf.features); the original model is left untouched.
    """
    import torch
    from tqdm import tqdm

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


def save_arguments(parameters: Sequence[str] | set[str], example: list, shapes: tuple) -> dict:
    """Keyword arguments for ``torch_tensorrt.save`` that keep the program's dynamic shapes, for the
    parameters this torch-tensorrt's ``save`` takes: ``dynamic_shapes`` where it has them (current
    releases re-trace at the example shapes otherwise), else ``retrace=False``, else nothing more
    (releases that never re-traced)."""
    names = set(parameters)
    inputs_key = "arg_inputs" if "arg_inputs" in names else "inputs"
    kwargs: dict = {"output_format": "exported_program", inputs_key: example}
    if "dynamic_shapes" in names:
        kwargs["dynamic_shapes"] = shapes
    elif "retrace" in names:
        kwargs["retrace"] = False
    return kwargs


def compile_student(
    model,
    spec: ModelSpec,
    profiles: Profiles | None = None,
    *,
    precision: str = "fp16",
    out: str | Path | None = None,
    calib_batches: Iterable[Sequence] | None = None,
    workspace_mb: int = 1024,
    device: int = 0,
):
    """Compile ``model`` with Torch-TensorRT (dynamo IR, dynamic B/T/L); save to ``out`` as an exported program.

    Returns the compiled ``torch.fx.GraphModule``. ``spec`` is the model's ``ModelSpec`` (K, D,
    feature width for the input shapes). ``precision`` is fp32, fp16 or int8 (int8 needs
    ``calib_batches``, e.g. from ``calibration_batches``, and nvidia-modelopt).
    """
    import torch

    if precision not in PRECISIONS:
        raise HBAFError(f"precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
    if precision == "int8" and calib_batches is None:
        raise HBAFError("precision int8 needs calib_batches (real utterances) for modelopt calibration")
    profiles = profiles or Profiles.for_spec(spec)
    profiles.check(spec)
    auto = auto_dims_available()
    check_torch_for_profile(profiles, torch_version(), auto)  # before anything slow
    torch_tensorrt = import_torch_tensorrt()
    if not torch.cuda.is_available():
        raise HBAFError("Torch-TensorRT needs a CUDA GPU and a CUDA build of torch; run this on the Jetson")
    cuda = f"cuda:{device}"
    torch.cuda.set_device(device)
    model = model.eval().to(cuda)

    def export_and_compile(m, enabled: set):
        program = export_student(m, profiles, spec, cuda, auto=auto)
        log.info("compiling the student with Torch-TensorRT %s (%s)", torch_tensorrt.__version__, precision)
        return torch_tensorrt.dynamo.compile(
            program,
            inputs=trt_inputs(profiles, spec),
            enabled_precisions=enabled,
            workspace_size=workspace_mb << 20,
            min_block_size=1,
        )

    if precision == "int8":
        from modelopt.torch.quantization.utils import export_torch_mode

        calib = [tuple(t.to(cuda) for t in batch) for batch in calib_batches]
        qmodel = quantize_student(model, calib)
        with torch.no_grad(), export_torch_mode():  # the quantizers lower to TensorRT Q/DQ in export and compile alike
            compiled = export_and_compile(qmodel, {torch.int8})
    else:
        with torch.no_grad():
            compiled = export_and_compile(model, {torch.float16} if precision == "fp16" else {torch.float32})
    if out is not None:
        example = list(example_inputs(profiles, spec, cuda))
        kwargs = save_arguments(inspect.signature(torch_tensorrt.save).parameters, example, dynamic_shapes(profiles, auto))
        with atomic_path(out) as tmp:
            torch_tensorrt.save(compiled, str(tmp), **kwargs)
        log.info("saved %s", out)
    return compiled


def load_compiled(path: str | Path):
    """Load a program saved by ``compile_student``; returns a callable module (runs on CUDA)."""
    import torch

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise HBAFError(f"compiled student {path} is missing or empty; compile it with `hbaf-export torch-trt --checkpoint DIR --out {path.name}`")
    import_torch_tensorrt()  # registers the TensorRT engine op the program calls
    try:
        return torch.export.load(str(path)).module()
    except Exception as err:
        raise HBAFError(f"{path} is not a Torch-TensorRT exported program for this torch/TensorRT ({first_line(err)}); "
                        "compile it again on this device") from err
