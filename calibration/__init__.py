"""INT8 calibration of the exported HBAF ONNX model (explicit Q/DQ, onnxruntime.quantization).

``calibration.data``: the calibration and evaluation utterances (whole dialogues of a manifest,
run through the runtime's offline path). ``calibration.quantize``: graph preparation, ranges, the
two flavours (``trt``, ``cpu``), dynamic INT8 and the Q/DQ placement check.
``calibration.report``: the pipelines behind ``hbaf-export int8 | compare-calibration`` (and the
INT8 stages of ``hbaf-export all``) and their JSON + markdown reports. ``calibration.builtin``:
the built-in rendered utterances used when no manifest is given.

The package needs only ``hbaf`` and ``edge_runtime`` (the offline path, the ONNX Runtime CPU
backend, the shared dialogues): ``export`` sits above it and calls it.
"""
