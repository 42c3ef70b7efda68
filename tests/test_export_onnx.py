"""ONNX export: the I/O contract, checker, metadata, and parity with PyTorch on real (espeak-ng) speech."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

LABELS = ["anger", "joy", "neutral", "sadness"]
LINES = [  # (dialogue, index, split, label, text)
    ("d1", 0, "train", "joy", "I got the job, I can't believe it!"),
    ("d1", 1, "train", "neutral", "Okay."),
    ("d1", 2, "train", "anger", "You never listen to anything I say, do you?"),
    ("d2", 0, "test", "sadness", "She left this morning and did not come back."),
    ("d2", 1, "test", "neutral", "Do you want some coffee?"),
    ("d2", 2, "test", "joy", "That is wonderful news, really wonderful."),
    ("d2", 3, "test", "anger", "Stop it."),
    ("d3", 0, "train", "sadness", "I miss him so much."),
    ("d3", 1, "train", "neutral", "The train leaves at nine."),
    ("d4", 0, "test", "neutral", "Where did you put the keys?"),
    ("d4", 1, "test", "anger", "That is the third time this week!"),
]


def _espeak(text: str, path: Path, speed: int) -> None:
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)


def make_manifest(folder: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (dia, idx, split, label, text) in enumerate(LINES):
        wav = folder / "wav" / f"{dia}_{idx}.wav"
        _espeak(text, wav, 140 + 15 * k)
        rows.append({"audio": f"wav/{wav.name}", "text": text, "label": label, "speaker": f"s{idx % 2}",
                     "dialogue": dia, "index": idx, "split": split})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_checkpoint(folder: Path) -> Path:
    import torch

    from hbaf.checkpoint import save_checkpoint
    from hbaf.model import HBAF, preset
    from hbaf.text import load_encoder_weights, resolve_text_encoder

    torch.manual_seed(0)
    enc = resolve_text_encoder()
    model = HBAF(preset("tiny"), LABELS)
    model.init_text_from_pretrained(load_encoder_weights(enc))
    save_checkpoint(model, folder, enc / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from export.onnx_export import export_onnx

    torch.set_num_threads(1)  # the CI machine is small and shared

    root = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(root / "ckpt")
    manifest = make_manifest(root / "data")
    path = export_onnx(ckpt, root / "out" / "model.onnx")
    return ckpt, manifest, path


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_contract_checker_and_metadata(exported):
    ckpt, _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")) == 17
    ins = {i.name: i for i in model.graph.input}
    outs = {o.name: o for o in model.graph.output}
    assert list(ins) == ["audio_feats", "audio_mask", "input_ids", "attention_mask", "memory", "memory_mask"]
    assert list(outs) == ["probs", "utt_emb", "gate", "audio_probs", "text_probs"]
    f32, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    assert {n: v.type.tensor_type.elem_type for n, v in ins.items()} == {
        "audio_feats": f32, "audio_mask": f32, "input_ids": i32, "attention_mask": i32, "memory": f32, "memory_mask": f32}
    assert _dims(ins["audio_feats"]) == ["batch", "frames", 384]
    assert _dims(ins["audio_mask"]) == ["batch", "frames"]
    assert _dims(ins["input_ids"]) == ["batch", "tokens"] == _dims(ins["attention_mask"])
    assert _dims(ins["memory"]) == ["batch", 4, 64] and _dims(ins["memory_mask"]) == ["batch", 4]
    assert _dims(outs["probs"]) == ["batch", 4] and _dims(outs["utt_emb"]) == ["batch", 64] and _dims(outs["gate"]) == ["batch", 2]
    assert _dims(outs["audio_probs"]) == ["batch", 4] == _dims(outs["text_probs"])
    assert all(o.type.tensor_type.elem_type == f32 for o in outs.values())
    # int32 ids go straight into the word-embedding Gather (no Cast to int64 on the way)
    readers = [n for n in model.graph.node if "input_ids" in n.input]
    assert readers and all(n.op_type == "Gather" for n in readers)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["hbaf"])
    assert meta["labels"] == LABELS and meta["context_size"] == 4 and meta["memory_dim"] == 64
    assert meta["outputs"] == list(outs)  # the metadata says which outputs the graph has
    assert meta["config"]["d_model"] == 64 and meta["hbaf_version"]
    cfg = json.loads((ckpt / "config.json").read_text())
    assert meta["source_checkpoint_sha256"] == cfg["weights_sha256"]
    assert meta["graph"] == "contract" and meta["exporter"] == "dynamo" and meta["opset"] == 17
    # the metadata is the checkpoint's ModelSpec (what every consumer reads) plus provenance
    from hbaf.checkpoint import load_checkpoint
    from hbaf.contract import ModelSpec, spec_from_onnx

    spec = ModelSpec.from_model(load_checkpoint(ckpt)[0])
    assert spec_from_onnx(model) == spec and {k: meta[k] for k in spec.to_metadata()} == spec.to_metadata()
    assert (path.parent / "tokenizer.json").read_bytes() == (ckpt / "tokenizer.json").read_bytes()
    assert not list(path.parent.glob("*.data")) and not list(path.parent.glob(".*tmp*"))  # one file, no leftovers


def test_trt_compat_check_passes(exported):
    trt_compat = pytest.importorskip("export.trt_compat")
    assert trt_compat.check_onnx_for_tensorrt(exported[2]) == []


def test_parity_on_real_speech_batch1_and_padded_batch3(exported):
    from export.parity import parity

    ckpt, manifest, path = exported
    res = parity(ckpt, path, manifest, n=len(LINES), batch=3, threads=1)
    assert res["n"] == len(LINES) and res["dialogues"] == 4
    lo, hi = res["frames_min_max"]
    assert hi > lo  # the padded batches really mix lengths
    assert res["sequential_max_abs_prob_diff"] < 1e-4
    assert res["sequential_top1_agreement"] == 1.0
    assert res["sequential_max_utt_emb_diff"] < 1e-3
    assert res["batched_max_abs_prob_diff_vs_torch"] < 1e-4
    assert res["batched_top1_agreement_vs_torch"] == 1.0
    assert res["batched_vs_batch1_max_abs_prob_diff"] < 1e-4


def test_parity_refuses_an_onnx_of_another_model(exported, tmp_path):
    from helpers import tiny_checkpoint

    from export.parity import parity
    from hbaf.errors import HBAFError

    _, manifest, path = exported
    other = tiny_checkpoint(tmp_path / "other", ["a", "b"])
    with pytest.raises(HBAFError, match="not the same model"):
        parity(other, path, manifest, n=2, threads=1)


def test_dynamic_axes_at_b1_and_b3_with_different_lengths(exported):
    from edge_runtime.backends import TorchBackend, onnx_cpu

    ckpt, _, path = exported
    ort_backend, torch_backend = onnx_cpu(path, threads=1), TorchBackend(ckpt)
    rng = np.random.default_rng(0)
    for b, t, length in ((1, 1, 1), (1, 257, 9), (3, 120, 31), (3, 499, 128)):
        feeds = {
            "audio_feats": rng.standard_normal((b, t, 384)).astype(np.float32),
            "audio_mask": np.ones((b, t), np.float32),
            "input_ids": rng.integers(1000, 29000, (b, length)).astype(np.int32),
            "attention_mask": np.ones((b, length), np.int32),
            "memory": rng.standard_normal((b, 4, 64)).astype(np.float32),
            "memory_mask": np.zeros((b, 4), np.float32),
        }
        feeds["memory_mask"][:, 2:] = 1
        if b > 1:
            feeds["audio_mask"][1, t // 3:] = 0
            feeds["attention_mask"][2, length // 2:] = 0
        ref = torch_backend.run(feeds)
        got = ort_backend.run(feeds)
        assert [got[k].shape for k in ("probs", "utt_emb", "gate")] == [(b, 4), (b, 64), (b, 2)]
        assert np.abs(ref["probs"] - got["probs"]).max() < 1e-4
        assert (ref["probs"].argmax(1) == got["probs"].argmax(1)).all()
        for head in ("audio_probs", "text_probs"):  # what the voice says, what the words say
            assert got[head].shape == (b, 4)
            assert np.abs(ref[head] - got[head]).max() < 1e-4


def test_smoke_parity_catches_an_onnx_that_disagrees(exported, tmp_path):
    from edge_runtime.backends import TorchBackend
    from export.parity import smoke_parity
    from hbaf.errors import HBAFError

    ckpt, _, path = exported
    import torch

    reference = TorchBackend(ckpt)
    assert smoke_parity(reference, path, vocab_size=30522, threads=1) < 1e-4
    with torch.no_grad():
        reference.model.head.bias.copy_(torch.tensor([0.0, 3.0, -3.0, 1.0]))  # now another model than the file
    with pytest.raises(HBAFError, match="ONNX Runtime disagrees with PyTorch"):
        smoke_parity(reference, path, vocab_size=30522, threads=1)


def test_calibration_batches_for_torch_tensorrt(exported):
    from edge_runtime.backends import TorchBackend
    from export.torch_trt import calibration_batches

    ckpt, manifest, _ = exported
    batches = calibration_batches(TorchBackend(ckpt), manifest, num=5, batch=2, workers=1)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]  # 5 train utterances (d1, d3), padded 2 at a time
    for b in batches:
        assert [t.dtype.is_floating_point for t in b] == [True, True, False, False, True, True]
        assert b[4].shape[1:] == (4, 64) and b[5].shape[1:] == (4,)
    # dialogues d1 (3 utterances) and d3 (2): each utterance sees as many memory slots as it has predecessors
    counts = np.concatenate([b[5].numpy() for b in batches]).sum(1)
    assert sorted(counts.tolist()) == [0, 0, 1, 1, 2]
    memory = np.concatenate([b[4].numpy() for b in batches])
    assert np.abs(memory[int(counts.argmax()), -2:]).min() > 0 and not memory[counts == 0].any()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parents[1]))


def test_cli_checkpoint_whose_config_does_not_match_its_weights(exported, tmp_path):
    ckpt = exported[0]
    bad = tmp_path / "bad_ckpt"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["config"]["d_model"] = 96
    (bad / "config.json").write_text(json.dumps(cfg))
    proc = _cli("onnx", "--checkpoint", str(bad), "--out", str(tmp_path / "x.onnx"))
    assert_one_line_error(proc, "do not match")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_missing_checkpoint_and_bad_output_name(tmp_path):
    assert_one_line_error(_cli("onnx", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")), "not found")
    assert_one_line_error(_cli("onnx"), "--checkpoint")
