import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error

from hbaf.checkpoint import load_checkpoint, save_checkpoint
from hbaf.contract import TOKENIZER_FILE
from hbaf.errors import HBAFError
from hbaf.metrics import classification_report, majority_baseline
from hbaf.model import HBAF, preset
from hbaf.text import resolve_text_encoder


def test_weighted_f1_by_hand():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 1, 0]
    r = classification_report(y, p, ["a", "b", "c"])
    f1_a = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_b = 2 * (2 / 3) * 1 / (5 / 3)
    assert r["per_class_f1"]["a"] == pytest.approx(f1_a)
    assert r["weighted_f1"] == pytest.approx((3 * f1_a + 2 * f1_b) / 6)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert np.array(r["confusion_matrix"]).sum() == 6
    maj = majority_baseline([0, 0, 1], [0, 1, 1], ["a", "b"])
    assert maj["accuracy"] == pytest.approx(1 / 3)


@pytest.fixture()
def ckpt(tmp_path):
    m = HBAF(preset("tiny"), ["x", "y"])
    return save_checkpoint(m, tmp_path / "ck", resolve_text_encoder() / TOKENIZER_FILE), m


def test_roundtrip(ckpt):
    path, m = ckpt
    m2, meta = load_checkpoint(path)
    assert meta["labels"] == ["x", "y"]
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_checkpoint_with_the_old_loss_keys_loads(ckpt):
    """Checkpoints written while HBAFConfig still held the loss weights load unchanged."""
    path, m = ckpt
    meta = json.loads((path / "config.json").read_text())
    meta["config"].update(w_audio=0.3, w_text=0.3, w_abs=0.1, w_rel=0.1, contrastive_temperature=0.1,
                          modality_dropout=0.15, label_smoothing=0.05)
    (path / "config.json").write_text(json.dumps(meta))
    m2, _ = load_checkpoint(path)
    assert m2.cfg == m.cfg
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())


def test_truncated_and_mismatched(ckpt):
    path, _ = ckpt
    w = path / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(HBAFError, match="truncated"):
        load_checkpoint(path)
    w.write_bytes(data)
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["d_model"] = 96
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HBAFError, match="do not match"):
        load_checkpoint(path)


def test_cli_truncated_checkpoint_is_one_line(ckpt, tmp_path):
    path, _ = ckpt
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    man = tmp_path / "m.jsonl"
    man.write_text("")
    proc = subprocess.run([sys.executable, "-m", "hbaf.cli", "evaluate", "--checkpoint", str(path), "--manifest", str(man)],
                          capture_output=True, text=True)
    assert_one_line_error(proc, "model.safetensors")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_float16_checkpoint_loads_as_float32_with_the_same_predictions(tmp_path):
    """float16 storage (the packaged student's): half the weights file, the hash still checked,
    loaded back as float32, same argmax and max |dprob| < 1e-2 on random inputs."""
    from hbaf.contract import INPUT_NAMES, ModelSpec, batch_feeds

    torch.manual_seed(0)
    m = HBAF(preset("tiny"), ["a", "b", "c", "d"]).eval()
    tok = resolve_text_encoder() / TOKENIZER_FILE
    p32 = save_checkpoint(m, tmp_path / "fp32", tok)
    p16 = save_checkpoint(m, tmp_path / "fp16", tok, dtype="float16")
    size32, size16 = (p / "model.safetensors" for p in (p32, p16))
    assert size16.stat().st_size < 0.6 * size32.stat().st_size
    assert json.loads((p16 / "config.json").read_text())["weights_dtype"] == "float16"
    m32, _ = load_checkpoint(p32)
    m16, meta = load_checkpoint(p16)
    assert all(v.dtype == torch.float32 for v in m16.state_dict().values() if v.is_floating_point())
    spec = ModelSpec.from_model(m32)
    rng = np.random.default_rng(0)
    b = 16
    feats = [rng.standard_normal((int(rng.integers(20, 300)), spec.feature_dim)).astype(np.float32) for _ in range(b)]
    ids = [rng.integers(1000, m32.cfg.vocab_size, size=int(rng.integers(3, 40))) for _ in range(b)]
    memory = rng.standard_normal((b, spec.context_size, spec.memory_dim)).astype(np.float32)
    mask = (rng.random((b, spec.context_size)) < 0.5).astype(np.float32)
    feeds = batch_feeds(spec, feats, ids, memory, mask)
    args = [torch.from_numpy(feeds[k]) for k in INPUT_NAMES]
    with torch.inference_mode():
        probs32, probs16 = m32(*args)[0], m16(*args)[0]
    assert torch.equal(probs32.argmax(-1), probs16.argmax(-1))
    assert float((probs32 - probs16).abs().max()) < 1e-2
    # the weights hash holds for float16 files too
    w = p16 / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(HBAFError, match="sha256"):
        load_checkpoint(p16)


def test_default_checkpoint_resolves_to_the_packaged_one_or_says_how(tmp_path, monkeypatch):
    from hbaf import checkpoint as ck

    monkeypatch.delenv(ck.DEFAULT_ENV, raising=False)
    monkeypatch.setattr(ck, "PACKAGED_DIR", tmp_path / "assets" / "student")
    with pytest.raises(HBAFError, match="no checkpoint ships with this install.*pass --checkpoint DIR"):
        ck.resolve_checkpoint("default")
    with pytest.raises(HBAFError, match="no checkpoint ships"):
        load_checkpoint("default")
    assert ck.resolve_checkpoint("runs/student") == ck.Path("runs/student")
    m = HBAF(preset("tiny"), ["x", "y"])
    save_checkpoint(m, ck.PACKAGED_DIR, resolve_text_encoder() / TOKENIZER_FILE, dtype="float16")
    assert ck.resolve_checkpoint("default") == ck.PACKAGED_DIR
    assert load_checkpoint("default")[1]["labels"] == ["x", "y"]
    monkeypatch.setenv(ck.DEFAULT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(HBAFError, match="HBAF_DEFAULT_CHECKPOINT"):
        ck.resolve_checkpoint("default")
