import json
import subprocess
import sys

import pytest
from helpers import assert_one_line_error


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hbaf.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_student_trained_on_ci_subset_beats_majority(ci_student):
    m = json.loads((ci_student / "metrics.json").read_text())
    test, majority = m["test"], m["majority_baseline_test"]
    assert test["weighted_f1"] > majority["weighted_f1"] + 0.05, (test["weighted_f1"], majority["weighted_f1"])
    assert (ci_student / "test_metrics_confusion.png").stat().st_size > 1000
    assert {"model.safetensors", "config.json", "tokenizer.json", "history.json"} <= {p.name for p in ci_student.iterdir()}


@pytest.mark.slow
def test_evaluate_cli_and_blank_text(ci_student, ci_corpus, tmp_path):
    proc = run_cli("evaluate", "--checkpoint", ci_student, "--corpus", ci_corpus, "--split", "test", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    full = json.loads((tmp_path / "eval_test.json").read_text())
    assert full["n"] > 50 and 0 <= full["weighted_f1"] <= 1
    proc = run_cli("evaluate", "--checkpoint", ci_student, "--corpus", ci_corpus, "--blank-text", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    blank = json.loads((tmp_path / "eval_test_blank_text.json").read_text())
    assert blank["n"] == full["n"]
    proc = run_cli("evaluate", "--checkpoint", ci_student, "--corpus", ci_corpus, "--asr-text", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "eval_test_asr_text.json").read_text())["n"] == full["n"]
    # one voice family, degraded audio, a seeded subset of whole dialogues
    proc = run_cli("evaluate", "--checkpoint", ci_student, "--corpus", ci_corpus, "--family", "flite",
                   "--condition", "telephone", "--limit", "30", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    tel = json.loads((tmp_path / "eval_test_flite_telephone.json").read_text())
    assert 0 < tel["n"] <= 30 + 20 and 0 <= tel["weighted_f1"] <= 1
    proc = run_cli("evaluate", "--checkpoint", ci_student, "--corpus", ci_corpus, "--condition", "underwater", "--out", tmp_path)
    assert_one_line_error(proc, "unknown audio condition 'underwater'")


def test_hold_out_one_voice_family(ci_corpus, tmp_path):
    proc = run_cli("train", "--corpus", ci_corpus, "--preset", "tiny", "--epochs", "1", "--max-steps", "2", "--augment", "1",
                   "--hold-out-family", "flite", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["hold_out_family"] == "flite" and set(metrics["test_by_family"]) == {"espeak-ng", "flite"}
    assert metrics["augment"] == 1 and list((ci_corpus / ".hbaf_cache").glob("*.augment.train-*.features.npz"))
    flite = metrics["test_by_family"]["flite"]
    assert flite["fused"]["n"] > 0 and 0 <= flite["audio_only"]["unweighted_accuracy"] <= 1
    assert metrics["test_audio_only"]["n"] == metrics["test"]["n"]
    proc = run_cli("train", "--corpus", ci_corpus, "--preset", "tiny", "--hold-out-family", "mbrola", "--out", tmp_path / "x")
    assert_one_line_error(proc, "no utterances of voice family 'mbrola'")


def test_bad_flags_and_commands_are_one_line_errors(tmp_path):
    """A bad flag or an unknown subcommand: exit 2, one `error:` line naming it, no usage block."""
    cases = [
        (("evaluate", "--checkpoint", tmp_path, "--manifest", tmp_path / "m.jsonl", "--bogus"), ("--bogus",)),
        (("frobnicate",), ("frobnicate", "make-corpus")),
        (("train", "--corpus", tmp_path, "--out", tmp_path, "--epochs", "many"), ("--epochs", "many")),
        (("train", "--corpus", tmp_path, "--manifest", tmp_path / "m.jsonl", "--out", tmp_path), ("--manifest",)),
    ]
    for args, words in cases:
        proc = run_cli(*args)
        assert_one_line_error(proc, *words)
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", (proc.stdout, proc.stderr)


def test_training_defaults_come_from_the_config():
    from hbaf.cli import ABLATIONS, build_parser
    from hbaf.losses import LossConfig
    from hbaf.model import preset
    from hbaf.train import TrainConfig

    d = TrainConfig()
    parser = build_parser()
    train = parser.parse_args(["train", "--corpus", "c", "--out", "o"])
    distill = parser.parse_args(["distill", "--corpus", "c", "--teacher", "t", "--out", "o"])
    for args in (train, distill):
        assert (args.epochs, args.max_utts, args.lr, args.text_lr, args.patience, args.seed, args.max_steps, args.asr_text) == (
            d.epochs, d.max_utts, d.lr, d.text_lr, d.patience, d.seed, d.max_steps, d.asr_text)
    assert (distill.temperature, distill.alpha, distill.hint_weight) == (d.distill_temperature, d.distill_alpha, d.hint_weight)
    assert distill.preset == "student" and train.preset == "teacher"
    assert train.features == "whisper-tiny.en:block2" and train.augment == 1 and train.hold_out_family is None
    for model_overrides, loss_overrides in ABLATIONS.values():  # each override names a real field
        preset("tiny", **model_overrides)
        LossConfig(**loss_overrides)


def test_a_small_corpus_gets_enough_steps():
    from hbaf.train import TrainConfig, plan_epochs

    assert plan_epochs(TrainConfig(), 200) == (8, 3)  # a full corpus: the usual 8 epochs
    assert plan_epochs(TrainConfig(), 6) == (50, 19)  # ~370 clips: 6 batches an epoch -> 300 steps
    assert plan_epochs(TrainConfig(), 1) == (80, 30)  # capped
    assert plan_epochs(TrainConfig(epochs=3), 6) == (3, 3)  # an explicit --epochs is kept


def test_asr_style_transcripts():
    from hbaf.text import asr_style

    assert asr_style("Oh my God!") == "Oh my God."
    assert asr_style("What?!") == "What?"
    assert asr_style("Hey!?") == "Hey?"
    assert asr_style("No!! Stop it!!!") == "No. Stop it."
    assert asr_style("Really? Well.....") == "Really? Well..."
    assert asr_style("I'm fine, thanks.") == "I'm fine, thanks."


@pytest.mark.slow
def test_ablate_runs_variants_and_writes_a_table(ci_corpus, tmp_path):
    proc = run_cli("ablate", "--corpus", ci_corpus, "--preset", "tiny", "--variants", "text-only,audio-only,fused-no-gate",
                   "--epochs", "1", "--max-steps", "2", "--augment", "0", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "ablations.md").read_text()
    for v in ("text-only", "audio-only", "fused-no-gate"):
        assert f"| {v} |" in table
    cfg = json.loads((tmp_path / "audio-only" / "config.json").read_text())["config"]
    assert cfg["modalities"] == "audio"


@pytest.mark.slow
def test_distill_from_teacher(ci_student, ci_corpus, tmp_path):
    proc = run_cli("distill", "--teacher", ci_student, "--corpus", ci_corpus, "--preset", "tiny", "--epochs", "1",
                   "--max-steps", "3", "--hint-weight", "0.1", "--augment", "0", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["n"] > 0


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_manifests_are_one_line_errors(ci_corpus, tmp_path):
    rows = [json.loads(line) for line in (ci_corpus / "manifest.jsonl").read_text().splitlines()[:40]]
    for r in rows:
        r["audio"] = str(ci_corpus / r["audio"])
    missing = [dict(rows[0], audio=str(tmp_path / "gone.wav"))] + rows[1:]
    write_manifest(tmp_path / "missing.jsonl", missing)
    assert_one_line_error(run_cli("train", "--manifest", tmp_path / "missing.jsonl", "--preset", "tiny", "--out", tmp_path / "o"),
                   "gone.wav", "line 1")
    empty_text = [dict(rows[0], text="  ")] + rows[1:]
    write_manifest(tmp_path / "empty_text.jsonl", empty_text)
    assert_one_line_error(run_cli("train", "--manifest", tmp_path / "empty_text.jsonl", "--preset", "tiny", "--out", tmp_path / "o"),
                   "line 1")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    unreadable = [dict(rows[0], audio=str(bad))] + rows[1:]
    write_manifest(tmp_path / "unreadable.jsonl", unreadable)
    assert_one_line_error(run_cli("train", "--manifest", tmp_path / "unreadable.jsonl", "--preset", "tiny", "--out", tmp_path / "o"),
                   "bad.wav")


def test_unknown_label_against_a_checkpoint(ci_corpus, tmp_path):
    from hbaf.checkpoint import save_checkpoint
    from hbaf.model import HBAF, preset
    from hbaf.text import resolve_text_encoder

    ck = save_checkpoint(HBAF(preset("tiny"), ["anger", "neutral"]), tmp_path / "ck", resolve_text_encoder() / "tokenizer.json")
    proc = run_cli("evaluate", "--checkpoint", ck, "--corpus", ci_corpus)
    assert_one_line_error(proc, "label")


@pytest.mark.slow
def test_training_on_asr_transcripts(ci_corpus, tmp_path):
    """--asr-transcripts feeds the recogniser's transcripts into training; bad files are one-line errors."""
    rows = [json.loads(line) for line in (ci_corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    base = ci_corpus
    heard = tmp_path / "asr.jsonl"
    heard.write_text("".join(json.dumps({"audio": str((base / r["audio"]).resolve()), "asr": "okay"}) + "\n" for r in train))
    proc = run_cli("train", "--corpus", ci_corpus, "--preset", "tiny", "--epochs", "1", "--max-steps", "2",
                   "--asr-text", "1.0", "--asr-transcripts", heard, "--augment", "0", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m" / "model.safetensors").exists()
    proc = run_cli("evaluate", "--checkpoint", tmp_path / "m", "--corpus", ci_corpus, "--asr-transcripts", heard)
    assert_one_line_error(proc, "has no transcript for")  # the file covers the train clips only
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "x.wav"}\n')
    proc = run_cli("train", "--corpus", ci_corpus, "--preset", "tiny", "--epochs", "1", "--max-steps", "1",
                   "--asr-text", "1.0", "--asr-transcripts", bad, "--augment", "0", "--out", tmp_path / "m2")
    assert_one_line_error(proc, "bad.jsonl line 1")
    proc = run_cli("train", "--corpus", ci_corpus, "--preset", "tiny", "--asr-transcripts", tmp_path / "none.jsonl",
                   "--out", tmp_path / "m3")
    assert_one_line_error(proc, "transcript file not found")
