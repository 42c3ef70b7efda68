"""The contract module: the model spec in every form, feeds, the ONNX metadata and file checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hbaf import contract
from hbaf.contract import MAX_FRAMES, MAX_TOKENS, ModelSpec, batch_feeds, make_feeds
from hbaf.errors import HBAFError

ASSETS = Path(__file__).resolve().parents[1] / "hbaf" / "assets"
SPEC = ModelSpec(labels=("a", "b", "c"), context_size=4, memory_dim=8, feature_kind="log-mel")


def test_limits_follow_from_one_definition():
    assert MAX_FRAMES == int(contract.MAX_SECONDS * contract.SAMPLE_RATE) // contract.HOP_LENGTH == 1000
    whisper = contract.FEATURE_FORMATS["whisper-tiny.en"]
    assert (whisper.dim, whisper.max_frames, whisper.frames_for(16000), whisper.frames_for(16001)) == (384, 500, 50, 51)
    log_mel = contract.FEATURE_FORMATS["log-mel"]
    assert (log_mel.dim, log_mel.max_frames, log_mel.frames_for(16000)) == (80, 1000, 101)
    with pytest.raises(HBAFError, match="unknown audio feature kind 'mfcc'"):
        ModelSpec(labels=("a",), context_size=1, memory_dim=4, feature_kind="mfcc")
    assert contract.Profiles().max == contract.Dims(8, MAX_FRAMES, MAX_TOKENS)
    assert [s.name for s in contract.INPUTS] == list(contract.INPUT_NAMES)
    assert set(contract.INPUT_DTYPES.values()) == {np.dtype("float32"), np.dtype("int32")}


def test_spec_round_trips_through_metadata_and_model():
    import torch

    from hbaf.model import HBAF, preset

    torch.manual_seed(0)
    model = HBAF(preset("tiny", text_layers=1), ["x", "y"])
    spec = ModelSpec.from_model(model)
    assert (spec.labels, spec.context_size, spec.memory_dim, spec.feature_dim) == (("x", "y"), 4, 64, 384)
    assert (spec.feature_kind, spec.max_frames) == ("whisper-tiny.en", 500)
    assert ModelSpec.from_metadata(json.loads(json.dumps(spec.to_metadata()))) == spec


def test_spec_reads_an_older_export_without_format_keys():
    """Files exported before the spec existed carry labels/K/D/limits and the config only."""
    old = {"labels": ["n", "j"], "context_size": 8, "memory_dim": 160, "max_frames": 1000, "max_tokens": 128,
           "config": {"n_mels": 80, "text_encoder": "sentence-transformers/all-MiniLM-L6-v2"}}
    spec = ModelSpec.from_metadata(old)
    assert spec.feature_kind == "log-mel" and spec.feature_dim == 80 and spec.sample_rate == 16000


@pytest.mark.parametrize("meta, match", [
    ({}, "carries no HBAF labels"),
    ({"labels": ["a"], "context_size": "x", "memory_dim": 8}, "malformed HBAF metadata"),
    ({"labels": ["a"], "context_size": 4}, "malformed HBAF metadata"),
    ({"labels": ["a"], "context_size": 4, "memory_dim": 8, "max_frames": 5000}, "exceed the contract"),
])
def test_spec_refuses_bad_metadata(meta, match):
    with pytest.raises(HBAFError, match=match):
        ModelSpec.from_metadata(meta)


def test_check_same_model_names_the_difference():
    other = ModelSpec(labels=("a", "b", "c"), context_size=8, memory_dim=8, feature_kind="log-mel")
    with pytest.raises(HBAFError, match="context_size differ"):
        SPEC.check_same_model(other, "the checkpoint and the ONNX", "export again")
    SPEC.check_same_model(ModelSpec(labels=("a", "b", "c"), context_size=4, memory_dim=8, feature_kind="log-mel"), "x", "y")
    with pytest.raises(HBAFError, match="feature_dim, feature_kind differ"):
        SPEC.check_same_model(ModelSpec(labels=("a", "b", "c"), context_size=4, memory_dim=8), "x", "y")


def test_make_feeds_cuts_pads_and_types():
    long = np.ones((MAX_FRAMES + 50, 80))
    feeds = make_feeds(SPEC, long, [[101, 102]], [[1, 1]], np.zeros((1, 4, 8)), np.zeros((1, 4)))
    assert feeds["audio_feats"].shape == (1, MAX_FRAMES, 80) and feeds["audio_feats"].dtype == np.float32
    short = make_feeds(SPEC, np.ones((10, 80)), [[101, 102]], [[1, 1]], np.zeros((1, 4, 8)), np.zeros((1, 4)),
                       min_frames=16, max_frames=300, min_tokens=4)
    assert short["audio_feats"].shape == (1, 16, 80) and short["audio_mask"].sum() == 10
    assert short["input_ids"].dtype == np.int32 and short["input_ids"].shape == (1, 4)
    assert short["attention_mask"].tolist() == [[1, 1, 0, 0]]
    with pytest.raises(HBAFError, match=r"do not fit the model's \[1, T, 80\]"):
        make_feeds(SPEC, np.ones((10, 40)), [[1]], [[1]], np.zeros((1, 4, 8)), np.zeros((1, 4)))


def test_batch_feeds_masks_the_padding():
    feeds = batch_feeds(SPEC, [np.ones((5, 80)), np.ones((3, 80))], [np.array([7, 8, 9]), np.array([7])],
                        np.zeros((2, 4, 8)), np.ones((2, 4)))
    assert feeds["audio_feats"].shape == (2, 5, 80) and feeds["audio_mask"].sum(1).tolist() == [5, 3]
    assert feeds["input_ids"].tolist() == [[7, 8, 9], [7, 0, 0]] and feeds["attention_mask"].sum(1).tolist() == [3, 1]
    assert {k: v.dtype for k, v in feeds.items()} == contract.INPUT_DTYPES


def test_shipped_model_reads_through_the_contract():
    proto = contract.read_onnx(ASSETS / "default.onnx", load_external_data=False)
    spec = contract.spec_from_onnx(proto)
    assert spec.context_size == 8 and spec.memory_dim == 160 and len(spec.labels) == 7
    assert contract.graph_kind(proto) == contract.GRAPH_ORT_CPU and contract.has_qdq(proto)


def test_metadata_and_memory_input_must_agree():
    proto = contract.read_onnx(ASSETS / "default.onnx", load_external_data=False)
    meta = contract.onnx_metadata(proto)
    meta["context_size"] = 4
    contract.set_onnx_metadata(proto, meta)
    with pytest.raises(HBAFError, match="metadata says K=4, D=160 but the graph's memory input is K=8"):
        contract.spec_from_onnx(proto)


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b"not a protobuf at all \xff\xfe", "not a readable ONNX model|not an ONNX model"),
])
def test_read_onnx_errors_are_one_line(tmp_path, content, match):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(HBAFError, match=match) as info:
        contract.read_onnx(bad)
    assert "\n" not in str(info.value)


def test_sidecar_carries_the_model_spec():
    side = contract.Sidecar(model=SPEC, onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
                            compute_capability="8.7", precision="int8", profiles=contract.Profiles(),
                            package_version="0.1.0", built_at="2026-01-01T00:00:00+00:00")
    back = contract.Sidecar.from_json(side.to_json())
    assert back == side and back.model.context_size == 4
    old = json.loads(side.to_json())
    del old["model"]
    with pytest.raises(HBAFError, match=r"lacks \['model'\]"):
        contract.Sidecar.from_json(json.dumps(old))
