"""Studies: measurements behind the numbers in docs/, kept so that they can be run again.

Each is a module run from the repository root, ``python -m studies.<name> --help``:

- ``check_prosody``: MELD-TTS emotion rendering against the known acoustics of emotional
  speech (docs/CORPUS.md);
- ``gpu_check``: the student on a CUDA GPU, PyTorch FP32/FP16 and INT8 against the CPU
  (docs/RESULTS.md);
- ``latency_analysis``: endpointing, speculation, beam size and encoder window against the
  latency a person feels (docs/LATENCY.md);
- ``sentence_end_analysis``: ending an utterance at the sentence, ``--sentence-end-ms``
  (docs/LATENCY.md);
- ``real_voices``: what a model says for the recordings of real people that install offline
  (docs/VOICES.md);
- ``layer_study``: which Whisper encoder layer the emotion model reads, one encoder pass per
  clip for every layer (docs/VOICES.md, "Which encoder layer").

Studies are not product code: nothing in hbaf, edge_runtime, export, calibration or bench
imports them. Finished studies whose results are recorded in docs/ are not kept here; each of
those documents names the commit that last had its script.
"""
