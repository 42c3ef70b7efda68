"""The TensorRT fusion backend: a ``.engine`` + its sidecar -> probs, utt_emb, gate (and the
uni-modal heads audio_probs, text_probs when the engine's model has them).

A thin user of the shared engine runner (``edge_runtime.trt_runner.EngineRunner``), which does
every file, sidecar, stale-ONNX and device check, owns the buffers, the stream and the
optimization profile, and frees them. What is the fusion model's own lives here: the sidecar
must describe a fusion engine, the engine's tensors must be the contract's six inputs and the
outputs its model spec lists (the sidecar's ``model.outputs``; an engine built before the heads
existed has the three and runs without them), and the engine's profile narrows the frames and
tokens the runtime feeds it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_runtime.backends import Backend, resolve_tokenizer
from edge_runtime.trt_runner import (  # noqa: F401 - re-exported: older callers import them from here
    TRT_MISSING,
    EngineRunner,
    gpu_info,
    import_tensorrt,
    read_engine,
    trt_major,
)
from hbaf.contract import GRAPH_FUSION, INPUT_NAMES, INPUTS, OUTPUT_NAMES, check_outputs
from hbaf.errors import HBAFError

SHAPE_FIX = "cut the audio/text to fit or rebuild the engine with a larger --max"


def _axis_range(runner: EngineRunner, axis: str) -> tuple[int, int, int]:
    """(min, opt, max) of a contract axis (B, T, L) in the engine's profile, read from the first input that has it."""
    spec = next(s for s in INPUTS if axis in s.axes)
    i = spec.axes.index(axis)
    return tuple(corner[i] for corner in runner.profile_shapes[spec.name])  # type: ignore[return-value]


class TensorRTBackend(Backend):
    """A TensorRT engine built by ``hbaf-export engine`` from an HBAF fusion ONNX."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, device: int = 0) -> None:
        t0 = time.perf_counter()
        runner = EngineRunner(engine_path, device=device, graph=GRAPH_FUSION, shape_fix=SHAPE_FIX)
        try:
            outputs = runner.sidecar.model.outputs if runner.sidecar.model is not None else OUTPUT_NAMES
            if sorted(runner.input_names) != sorted(INPUT_NAMES) or not set(outputs) <= set(runner.output_names):
                raise HBAFError(f"{runner.path} has I/O {list(runner.input_names)} -> {list(runner.output_names)}, not the HBAF "
                                f"contract; rebuild it from an exported HBAF ONNX with `{runner.rebuild}`")
        except BaseException:
            runner.close()
            raise
        self._runner = runner
        self.sidecar = runner.sidecar
        super().__init__(runner.path, self.sidecar.model)
        self.precision = self.sidecar.precision
        lo, _, hi = _axis_range(runner, "T")
        self.min_frames, self.max_frames = lo, min(hi, self.spec.max_frames)
        self.min_tokens, self.token_limit = _axis_range(runner, "L")[::2]
        self.max_batch = _axis_range(runner, "B")[2]
        onnx_path = self.sidecar.onnx_path
        self.tokenizer_file = resolve_tokenizer(self.path, {"onnx_path": onnx_path} if onnx_path else {}, self.spec)
        self.load_seconds = time.perf_counter() - t0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through the engine: inputs cast to the engine's dtypes, outputs as new numpy arrays."""
        missing = [n for n in INPUT_NAMES if n not in feeds]
        if missing:
            raise HBAFError(f"TensorRT backend: inputs {missing} are missing; pass all of {list(INPUT_NAMES)}")
        out = self._runner.run({n: feeds[n] for n in INPUT_NAMES})
        return check_outputs(out, str(self.path), self.spec.outputs)

    def close(self) -> None:
        """Free GPU buffers and TensorRT objects (also done at interpreter exit)."""
        self._runner.close()
