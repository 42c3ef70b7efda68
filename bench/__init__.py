"""`hbaf-edge bench`: latency, cold start and accuracy of every fusion backend against PyTorch FP32 eager.

    hbaf-edge bench --checkpoint runs/student --onnx exports/model.onnx \\
        --int8 exports/model.int8-cpu.onnx exports/model.int8-trt.onnx [--engine X.engine ...] \\
        [--teacher runs/teacher] --corpus meld-tts [--lengths 1,3,8] [--batch 1,8] [--runs 50] \\
        [--warmup 10] [--threads 2] [--out bench-report] [--quick] [--e2e WAV|demo]

Backends (each where this machine has it; otherwise a row says why not): PyTorch FP32 eager
(the baseline every speed-up and agreement is measured against, in the same run),
``torch.compile``, ONNX Runtime FP32 on the CPU (and with CUDA when the installed
onnxruntime has it), ONNX Runtime INT8 (every ``--int8`` model; the TensorRT-form Q/DQ
model is labelled as such), TensorRT engines, PyTorch CUDA FP32/FP16, Torch-TensorRT, and
the teacher checkpoint as a second PyTorch row.

How it is measured:

- Inputs are real utterances of the manifest's evaluation split (``--eval-split``, default
  test). For each length L (``--lengths``) the shortest utterances lasting at least L are
  cut to L seconds as audio, then turned into the model's features with
  ``hbaf.features.utterance_features`` (when too few last that long, consecutive utterances
  of one dialogue are joined first). Batch row j of a batch of B is cut to
  ``L * (1 - 0.4 j / (B - 1))`` seconds, so a batch holds several lengths, padded to the
  longest with masks (``hbaf.contract.batch_feeds``). Every call carries a full dialogue
  memory of K real utterance embeddings. All backends of one model get the identical arrays.
- Warm latency is the wall time of ``Backend.run`` (host arrays in, host arrays out, so a
  GPU backend's copies are included), timed by ``edge_runtime.timing.time_in_turns``:
  ``--warmup`` calls, then ``--runs`` timed calls, split into chunks that the backends take
  turns on, so background load falls on all of them alike; each chunk starts after a short
  pause and two untimed calls, so the worker threads of the backend timed before it have
  settled and the parked threads of this one are awake: a deployment runs one backend, so
  that cross-backend interference is not part of its latency. The garbage collector is off
  while timing. Threads are pinned: ``torch.set_num_threads(--threads)`` (one inter-op
  thread) and ONNX Runtime ``intra_op_num_threads = --threads``.
- Cold start is measured apart: by default each backend in a fresh process (library
  import, model load, first inference on a 3 s utterance at the start of a dialogue, peak
  resident memory). ``--quick`` measures it in this process instead (memory growth rather
  than peak).
- Accuracy: a sequential dialogue evaluation of the evaluation split per backend through
  the runtime's own offline path (``edge_runtime.offline.run_dialogues``: batch 1, each
  backend feeds its own utterance embeddings back as the dialogue memory); weighted F1, and
  top-1 agreement / largest probability difference with PyTorch FP32 eager on the same
  utterances. ``--eval-limit N`` keeps whole dialogues up to N utterances.

``--e2e WAV`` (or ``--e2e demo``) runs the real pipeline (Silero VAD, faster-whisper ASR,
features, fusion with the dialogue memory) over a recording as fast as possible and reports
each stage's share of compute, the real-time factor and end of speech -> event latency.

Outputs in ``--out`` (written atomically): ``bench.json`` (everything), ``bench.md`` (the
header and tables that are also printed) and ``bench_latency.png`` (latency distribution per
backend; ``e2e_latency.png`` for the end-to-end mode).

``--soak MINUTES`` runs the soak instead (``bench.soak``): the runtime's own pipeline over a
long generated stream of speech, read unpaced, watched for lost events, drops, memory growth
and latency drift; ``soak.json`` and ``soak.events.jsonl`` in ``--out``, exit 1 when an event
was lost.

The package sits above the runtime, calibration and export layers (it opens every form of a
model) and plugs ``bench`` into the runtime's ``hbaf-edge`` command (``bench.cli.COMMAND``,
entry-point group ``hbaf_edge.commands``). Modules, by job: ``cli`` (flags, ``run_bench``,
``run_soak``), ``machine`` (machine facts, memory, threads), ``backends`` (the backends under
test and their input limits), ``lineup`` (which rows a run has and opening them), ``cases``
(inputs), ``timing`` (warm latency per input), ``cold_start``, ``evaluation`` (accuracy and
agreement), ``fusion`` (one fusion benchmark, start to end), ``e2e``, ``soak`` and ``report``.
"""
