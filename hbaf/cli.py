"""`hbaf`: corpus building, training, evaluation, ablations and distillation."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from hbaf.errors import ArgumentParser, HBAFError, cli_entry

if TYPE_CHECKING:
    from hbaf.train import TrainConfig

log = logging.getLogger("hbaf")

NO_CONTRASTIVE = {"w_abs": 0.0, "w_rel": 0.0}  # LossConfig overrides: no inter-modal contrastive terms
ABLATIONS: dict[str, tuple[dict, dict]] = {  # name -> (HBAFConfig overrides, LossConfig overrides)
    "text-only": ({"modalities": "text"}, {}),
    "audio-only": ({"modalities": "audio"}, {}),
    "fused-no-gate": ({"use_gate": False}, {}),
    "fused-no-contrastive": ({}, NO_CONTRASTIVE),
    "full": ({}, {}),
}


def _add_data_args(p: argparse.ArgumentParser, seed: int) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--manifest", help="JSONL manifest (audio, text, label, speaker, dialogue, index, split)")
    g.add_argument("--corpus", help="a corpus built by `hbaf make-corpus` (name under $HBAF_HOME/corpora, or its folder)")
    g.add_argument("--meld-raw", help="root of the official MELD.Raw release")
    g.add_argument("--iemocap", help="root of IEMOCAP_full_release")
    p.add_argument("--seed", type=int, default=seed,
                   help="seed of the split of a manifest that has none, and of training (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="feature-extraction processes (default: all cores)")


def _add_train_args(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Flags of the training commands; ``d`` is the default ``TrainConfig``."""
    from hbaf.contract import FEATURE_FORMATS, TRAIN_FEATURE_KIND
    from hbaf.model import PRESETS

    p.add_argument("--preset", default="teacher", choices=tuple(PRESETS), help="model size (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="passes over the training set (default: 8, or more on a small corpus, enough for "
                        f"{d.min_steps} optimizer steps, at most {d.max_auto_epochs})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many optimizer steps")
    p.add_argument("--max-utts", type=int, default=d.max_utts, help="utterances per batch (whole dialogues)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--text-lr", type=float, default=d.text_lr)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--text-encoder", default=None, help="local folder or hub name of the BERT-style text encoder")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="train on this seeded fraction of the training dialogues (dev/test untouched)")
    p.add_argument("--asr-text", type=float, default=d.asr_text, metavar="P",
                   help="replace this share of training transcripts by their ASR form, so the model does not lean on "
                        "what the runtime's recogniser never writes (default %(default)s): the --asr-transcripts entry, "
                        "else the reference rewritten by rule (no '!')")
    p.add_argument("--asr-transcripts", default=None, metavar="JSONL",
                   help="recogniser transcripts of the training clips (hbaf-edge transcribe)")
    p.add_argument("--features", default=TRAIN_FEATURE_KIND, choices=tuple(FEATURE_FORMATS),
                   help="audio input: a layer of the recogniser's Whisper encoder (whisper-tiny.en: the last; :conv, :block1 .. "
                        ":block4: an inner one, docs/VOICES.md), or release 1's log-mel (default %(default)s)")
    p.add_argument("--augment", type=int, default=1, metavar="N",
                   help="degraded copies of every training clip (gain, noise, reverberation, telephone band, speed; "
                        "hbaf.data.augment), drawn at random with the clean one at every step (default %(default)s: "
                        "without it, 6 epochs lost up to 13 weighted-F1 points on telephone-band audio, docs/VOICES.md; "
                        "0 saves encoding the copies)")
    p.add_argument("--hold-out-family", default=None, metavar="FAMILY",
                   help="leave this voice family (e.g. flite) out of train and dev; the test report gives it separately")


def load_records(args: argparse.Namespace, labels: list[str] | None = None):
    """Records from whichever data flag was given; manifest paths are checked up front."""
    if args.manifest:
        from hbaf.data.manifest import load_manifest

        return load_manifest(args.manifest, seed=args.seed, labels=labels), Path(args.manifest)
    if args.corpus:
        from hbaf.data.manifest import load_manifest
        from hbaf.data.store import corpus_manifest

        manifest = corpus_manifest(args.corpus)

        return load_manifest(manifest, seed=args.seed, labels=labels), manifest
    if args.meld_raw:
        from hbaf.data.meld_raw import load_meld_raw

        recs = load_meld_raw(args.meld_raw, workers=args.workers)
        return _filter_labels(recs, labels), Path(args.meld_raw) / "manifest.jsonl"
    from hbaf.data.iemocap import load_iemocap

    recs = load_iemocap(args.iemocap)
    return _filter_labels(recs, labels), Path(args.iemocap) / "manifest.jsonl"


def _check_classes(records) -> None:
    from hbaf.train import check_classes

    check_classes(records)


def _filter_labels(records, labels):
    if labels is not None:
        unknown = sorted({r.label for r in records} - set(labels))
        if unknown:
            raise HBAFError(f"labels {unknown} are not in the model's label set {labels}; evaluate on data with the model's labels")
    return records


def _feature_store(records, manifest: Path, workers, kind: str, condition: str = "clean", tag: str | None = None):
    """Features of ``records`` (all of ``manifest``'s, or a subset named ``tag``), cached per kind and condition."""
    from hbaf.data.store import FeatureStore, feature_cache_path, manifest_subset

    if tag and manifest.is_file():  # a subset: out of the whole manifest's cache when it has one
        subset = manifest_subset(manifest, records, kind, condition)
        if subset is not None:
            return subset
    cache = feature_cache_path(manifest, records if tag else None, tag, kind=kind, condition=condition)
    return FeatureStore(records, cache, workers=workers, kind=kind, condition=condition)


def _hold_out(records, family: str) -> list[int]:
    """Indices of ``records`` without the train and dev utterances of ``family`` (its test utterances
    stay: the unseen-voice test)."""
    families = sorted({r.family for r in records if r.family})
    if family not in families:
        raise HBAFError(f"no utterances of voice family {family!r} in the data (it has: {', '.join(families) or 'none'}); "
                        "render the corpus with it or pick another --hold-out-family")
    kept = [i for i, r in enumerate(records) if r.split == "test" or r.family != family]
    log.info("holding out family %s: %d of %d utterances kept", family, len(kept), len(records))
    return kept


def _new_model(cfg, labels):
    from hbaf.model import HBAF
    from hbaf.text import load_encoder_weights, resolve_text_encoder

    model = HBAF(cfg, labels)
    enc_path = resolve_text_encoder(cfg.text_encoder)
    if model.use_text:
        model.init_text_from_pretrained(load_encoder_weights(enc_path))
    return model, enc_path


def _train_one(args, cfg, records, store, manifest: Path, out_dir: Path, teacher_out=None, tc_overrides: dict | None = None,
               loss_overrides: dict | None = None) -> dict:
    from hbaf.data.manifest import label_set
    from hbaf.data.store import SubStore, augment_condition, subset_train
    from hbaf.losses import LossConfig
    from hbaf.text import Tokenizer
    from hbaf.train import TrainConfig, load_transcripts, train

    labels = label_set(records)
    family = getattr(args, "hold_out_family", None)
    subsets = [lambda recs: _hold_out(recs, family)] if family else []
    if args.train_fraction < 1.0:
        subsets.append(lambda recs: subset_train(recs, args.train_fraction, args.seed))
    for subset in subsets:  # records, features and teacher outputs cut alike
        keep = subset(records)
        records, store = [records[i] for i in keep], SubStore(store, keep)
        if teacher_out is not None:
            teacher_out = {k: v[keep] for k, v in teacher_out.items()}
    model, enc_path = _new_model(cfg, labels)
    tok = Tokenizer(enc_path, cfg.max_tokens)
    tc = TrainConfig(epochs=args.epochs, max_utts=args.max_utts, lr=args.lr, text_lr=args.text_lr, patience=args.patience,
                     seed=args.seed, max_steps=args.max_steps, threads=args.threads, asr_text=args.asr_text,
                     asr_transcripts=load_transcripts(args.asr_transcripts) if args.asr_transcripts else None,
                     loss=LossConfig(**(loss_overrides or {})), **(tc_overrides or {}))
    train_recs = [r for r in records if r.split == "train"]
    augmented = [_feature_store(train_recs, manifest, args.workers, cfg.feature_kind, augment_condition(k), tag="train")
                 for k in range(args.augment)]
    summary = train(model, records, store, tok, out_dir, tc, teacher_out=teacher_out, augmented=augmented)
    summary.update(train_fraction=args.train_fraction, augment=args.augment, hold_out_family=family,
                   feature_kind=cfg.feature_kind)
    return _report_test(out_dir, records, store, summary)


def _report_test(out_dir: Path, records, store, summary: dict) -> dict:
    from hbaf.checkpoint import load_checkpoint, tokenizer_path
    from hbaf.io import write_json_atomic
    from hbaf.model import count_parameters
    from hbaf.text import Tokenizer
    from hbaf.data.store import SubStore
    from hbaf.train import evaluate, write_eval_outputs

    model, meta = load_checkpoint(out_dir)
    tok = Tokenizer(tokenizer_path(out_dir), model.cfg.max_tokens)
    idx = [i for i, r in enumerate(records) if r.split == "test"]
    metrics = {"checkpoint": str(out_dir), "preset_config": meta["config"], "parameters": count_parameters(model), **summary}
    if idx:
        test = [records[i] for i in idx]
        report, pred = evaluate(model, test, SubStore(store, idx), tok, desc="test")
        metrics["test"] = report
        write_eval_outputs(out_dir, "test_metrics", report, f"test, weighted F1 {100 * report['weighted_f1']:.1f}")
        if model.use_audio and model.use_text:  # what the audio alone says: the same model, blank transcripts
            _, audio_pred = evaluate(model, test, SubStore(store, idx), tok, desc="test (audio only)", blank_text=True)
            metrics["test_audio_only"] = _brief(model, test, audio_pred)
        families = sorted({r.family for r in test if r.family})
        if len(families) > 1:  # each voice family on its own (the held-out one is an unseen voice)
            metrics["test_by_family"] = {
                fam: {"fused": _brief(model, test, pred, fam),
                      **({"audio_only": _brief(model, test, audio_pred, fam)} if "test_audio_only" in metrics else {})}
                for fam in families}
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def _brief(model, records, pred: dict, family: str | None = None) -> dict:
    """Weighted F1, accuracy and unweighted recall of ``pred`` (on ``records``, or those of ``family``)."""
    from hbaf.metrics import classification_report

    idx = [i for i, r in enumerate(records) if family is None or r.family == family]
    li = {lab: i for i, lab in enumerate(model.labels)}
    rep = classification_report([li[records[i].label] for i in idx], pred["probs"][idx].argmax(1), model.labels)
    return {"n": len(idx), **{k: rep[k] for k in ("weighted_f1", "accuracy", "unweighted_accuracy", "macro_f1")}}


def _cfg_from_args(args, **overrides):
    from hbaf.model import preset

    if getattr(args, "features", None):
        overrides.setdefault("feature_kind", args.features)
    cfg = preset(args.preset, **overrides)
    if getattr(args, "text_encoder", None):
        cfg = replace(cfg, text_encoder=args.text_encoder)
    return cfg


def cmd_make_corpus(args) -> int:
    from hbaf.data.meld_tts import build_corpus, default_corpus_dir

    out = Path(args.out) if args.out else default_corpus_dir()
    manifest = build_corpus(out, limit=args.limit, strength=args.strength, seed=args.seed, workers=args.workers,
                            families=args.families)
    print(f"corpus manifest: {manifest}")
    return 0


def cmd_train(args) -> int:
    overrides = {}
    if args.modalities:
        overrides["modalities"] = args.modalities
    if args.no_gate:
        overrides["use_gate"] = False
    cfg = _cfg_from_args(args, **overrides)
    records, manifest = load_records(args)
    _check_classes(records)  # before any feature is computed
    store = _feature_store(records, manifest, args.workers, cfg.feature_kind)
    metrics = _train_one(args, cfg, records, store, manifest, Path(args.out),
                         loss_overrides=NO_CONTRASTIVE if args.no_contrastive else None)
    _print_summary(args.out, metrics)
    return 0


def _print_summary(out, metrics: dict) -> None:
    line = f"checkpoint: {out}  dev wF1 {100 * metrics['best_dev_weighted_f1']:.1f}"
    if "test" in metrics:
        t = metrics["test"]
        maj = metrics.get("majority_baseline_test") or {}
        line += (f"  test wF1 {100 * t['weighted_f1']:.1f}  acc {100 * t['accuracy']:.1f}  macro-F1 {100 * t['macro_f1']:.1f}"
                 f"  (majority-class wF1 {100 * maj.get('weighted_f1', 0):.1f})")
    print(line)


def cmd_evaluate(args) -> int:
    from hbaf.checkpoint import load_checkpoint, tokenizer_path
    from hbaf.text import Tokenizer
    from hbaf.train import evaluate, write_eval_outputs

    model, _ = load_checkpoint(args.checkpoint)
    records, manifest = load_records(args, labels=model.labels)
    idx = [i for i, r in enumerate(records) if r.split == args.split]
    if not idx:
        raise HBAFError(f"no utterances in split '{args.split}'; choose --split train|dev|test")
    if args.family:
        idx = [i for i in idx if records[i].family == args.family]
        if not idx:
            raise HBAFError(f"no {args.split} utterances of voice family {args.family!r}; check --family")
    if args.limit:
        from hbaf.data.store import take_dialogue_indices

        kept = set(take_dialogue_indices([records[i] for i in idx], args.limit, seed=0))
        idx = [i for k, i in enumerate(idx) if k in kept]
    store = _feature_store([records[i] for i in idx], manifest, args.workers, model.cfg.feature_kind, args.condition,
                           tag=f"eval-{args.split}")
    tok = Tokenizer(tokenizer_path(args.checkpoint), model.cfg.max_tokens)
    out = Path(args.out or args.checkpoint)
    name = (f"eval_{args.split}" + ("_blank_text" if args.blank_text else "") + ("_asr_text" if args.asr_text else "")
            + ("_asr_transcripts" if args.asr_transcripts else "") + (f"_{args.family}" if args.family else "")
            + (f"_{args.condition}" if args.condition != "clean" else ""))
    chosen = [records[i] for i in idx]
    if args.asr_text or args.asr_transcripts:
        from hbaf.text import asr_style
        from hbaf.train import load_transcripts

        heard = load_transcripts(args.asr_transcripts) if args.asr_transcripts else {}
        missing = [r.audio for r in chosen if args.asr_transcripts and r.audio not in heard]
        if missing:
            raise HBAFError(f"{args.asr_transcripts} has no transcript for {len(missing)} {args.split} clip(s) (e.g. {missing[0]}); "
                            f"run hbaf-edge transcribe --split {args.split}")
        chosen = [replace(r, text=heard[r.audio] if heard else asr_style(r.text)) for r in chosen]
    report, _ = evaluate(model, chosen, store, tok, blank_text=args.blank_text)
    write_eval_outputs(out, name, report, f"{args.split}, weighted F1 {100 * report['weighted_f1']:.1f}")
    print(f"{args.split}: weighted F1 {100 * report['weighted_f1']:.1f}  accuracy {100 * report['accuracy']:.1f}  "
          f"UA {100 * report['unweighted_accuracy']:.1f}  macro F1 {100 * report['macro_f1']:.1f}  "
          f"mean gate (text->audio, audio->text) {report['mean_gate'][0]:.2f}/{report['mean_gate'][1]:.2f}  -> {out / (name + '.json')}")
    return 0


def cmd_ablate(args) -> int:
    """Train every ablation variant (resumable: a variant with metrics.json is reused) and print one table."""
    import json

    from hbaf.io import write_json_atomic, write_text_atomic

    records, manifest = load_records(args)
    _check_classes(records)  # before any feature is computed
    store = _feature_store(records, manifest, args.workers, _cfg_from_args(args).feature_kind)
    out = Path(args.out)
    rows = {}
    for name in args.variants.split(","):
        if name not in ABLATIONS:
            raise HBAFError(f"unknown ablation '{name}'; choose from {', '.join(ABLATIONS)}")
        vdir = out / name
        if (vdir / "metrics.json").exists() and not args.retrain:
            metrics = json.loads((vdir / "metrics.json").read_text())
        else:
            log.info("training ablation %s", name)
            model_overrides, loss_overrides = ABLATIONS[name]
            metrics = _train_one(args, _cfg_from_args(args, **model_overrides), records, store, manifest, vdir,
                                 loss_overrides=loss_overrides)
        rows[name] = metrics
    table = ["| variant | test weighted F1 | accuracy | macro F1 | dev weighted F1 | epochs |", "|---|---|---|---|---|---|"]
    for name, m in rows.items():
        t = m.get("test", {})
        table.append(f"| {name} | {100 * t.get('weighted_f1', 0):.1f} | {100 * t.get('accuracy', 0):.1f} | "
                     f"{100 * t.get('macro_f1', 0):.1f} | {100 * m['best_dev_weighted_f1']:.1f} | {len(m['history'])} |")
    text = "\n".join(table)
    write_text_atomic(out / "ablations.md", text + "\n")
    write_json_atomic(out / "ablations.json", {k: {"test": v.get("test"), "best_dev_weighted_f1": v["best_dev_weighted_f1"]}
                                               for k, v in rows.items()})
    print(text)
    return 0


def cmd_distill(args) -> int:
    from hbaf.checkpoint import load_checkpoint, tokenizer_path
    from hbaf.text import Tokenizer
    from hbaf.train import predict

    teacher, _ = load_checkpoint(args.teacher)
    records, manifest = load_records(args, labels=teacher.labels)
    _check_classes(records)
    store = _feature_store(records, manifest, args.workers, teacher.cfg.feature_kind)
    tok = Tokenizer(tokenizer_path(args.teacher), teacher.cfg.max_tokens)
    log.info("computing teacher soft targets")
    pred = predict(teacher, records, store, tok, desc="teacher")
    teacher_out = {"logits": pred["logits"], "utt_emb": pred["utt_emb"]}
    cfg = _cfg_from_args(args)
    if cfg.feature_kind != teacher.cfg.feature_kind:
        store = _feature_store(records, manifest, args.workers, cfg.feature_kind)
    metrics = _train_one(args, cfg, records, store, manifest, Path(args.out), teacher_out=teacher_out,
                         tc_overrides={"distill_temperature": args.temperature, "distill_alpha": args.alpha,
                                       "hint_weight": args.hint_weight})
    _print_summary(args.out, metrics)
    return 0


def cmd_adapt(args) -> int:
    from hbaf.adapt import AdaptConfig, adapt

    cfg = AdaptConfig(manifest=args.manifest, out=args.out, start=args.start, per_class=args.per_class, export=args.export,
                      text_branch=args.text_branch, asr_transcripts=args.asr_transcripts, seed=args.seed,
                      dev_fraction=args.dev_fraction, lr=args.lr, max_utts=args.max_utts, min_steps=args.min_steps,
                      epochs=args.epochs, max_steps=args.max_steps, patience=args.patience, augment=args.augment,
                      balance=not args.no_balance, threads=args.threads, workers=args.workers)
    result = adapt(cfg)
    after = result["after"]
    shown = after.get("test") or after.get("dev")
    which = "test" if "test" in after else "dev (speaker-independent)" if result["split"].startswith("speaker") else "dev"
    line = (f"adapted model: {args.out}  {which}: accuracy {100 * shown['accuracy']:.1f}  UA {100 * shown['unweighted_accuracy']:.1f}"
            f"  weighted F1 {100 * shown['weighted_f1']:.1f}")
    before = result["before"].get("test" if "test" in after else "dev")
    if before:
        line += f"  (before: accuracy {100 * before['accuracy']:.1f})"
    print(line)
    rss = result["peak_rss"]
    print(f"time {result['seconds']:.0f} s ({result['steps']} steps in {result['train_seconds']:.0f} s, features "
          f"{result['feature_seconds']:.0f} s)  peak RSS {rss['self_mb']:.0f} MB"
          + (f" (largest child process {rss['largest_child_mb']:.0f} MB)" if rss["largest_child_mb"] else ""))
    if "export" in result:
        print(f"INT8 model: {Path(args.out) / result['export']['int8_cpu']}  "
              f"(hbaf-edge run --model {Path(args.out) / result['export']['int8_cpu']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hbaf.data.prosody import DEFAULT_STRENGTH
    from hbaf.train import TrainConfig

    d = TrainConfig()
    ap = ArgumentParser(prog="hbaf", description="HBAF speech emotion recognition: data, training, evaluation")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("make-corpus", help="render the MELD-TTS corpus (synthetic speech) with espeak-ng, flite and festival")
    p.add_argument("--out", default=None)
    p.add_argument("--limit", type=int, default=None, help="max utterances per split (whole dialogues)")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                   help="how strongly prosody follows the label (0..1, default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--families", default=None, metavar="LIST",
                   help="synthesizer families, comma separated: espeak-ng,flite,festival (default: all installed); "
                        "each dialogue gets one")
    p.set_defaults(fn=cmd_make_corpus)

    p = sub.add_parser("train", help="train a teacher or student; early stopping on dev weighted F1")
    _add_data_args(p, d.seed)
    _add_train_args(p, d)
    p.add_argument("--out", required=True)
    p.add_argument("--modalities", choices=["both", "audio", "text"], default=None)
    p.add_argument("--no-gate", action="store_true")
    p.add_argument("--no-contrastive", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("evaluate", help="metrics JSON + confusion matrix PNG of a checkpoint on a split")
    _add_data_args(p, d.seed)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None)
    p.add_argument("--blank-text", action="store_true", help="evaluate with empty transcripts (audio must carry it)")
    p.add_argument("--asr-text", action="store_true", help="evaluate with the reference transcripts rewritten as the ASR writes them (no '!')")
    p.add_argument("--asr-transcripts", default=None, metavar="JSONL",
                   help="evaluate with these recogniser transcripts of the clips (hbaf-edge transcribe)")
    p.add_argument("--family", default=None, help="only the utterances of this voice family (e.g. flite)")
    p.add_argument("--limit", type=int, default=None, help="at most N utterances of the split (whole dialogues, a seeded draw)")
    p.add_argument("--condition", default="clean",
                   help="degrade the audio first: clean, noise-10db, reverb, telephone, gain+12, gain-12 (hbaf.data.augment)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("ablate", help="train and compare text-only, audio-only, no-gate, no-contrastive and full")
    _add_data_args(p, d.seed)
    _add_train_args(p, d)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default=",".join(ABLATIONS))
    p.add_argument("--retrain", action="store_true")
    p.set_defaults(fn=cmd_ablate)

    p = sub.add_parser("distill", help="train the student from a teacher's soft targets")
    _add_data_args(p, d.seed)
    _add_train_args(p, d)
    p.set_defaults(preset="student")
    p.add_argument("--teacher", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--temperature", type=float, default=d.distill_temperature, help="soft-target temperature")
    p.add_argument("--alpha", type=float, default=d.distill_alpha, help="weight of the soft-target term (1 - alpha on the labels)")
    p.add_argument("--hint-weight", type=float, default=d.hint_weight,
                   help="weight of the hidden-state hint (student utterance embedding -> teacher's)")
    p.set_defaults(fn=cmd_distill)

    from hbaf.adapt import AdaptConfig, TEXT_CHOICES

    a = AdaptConfig(manifest="", out="")
    p = sub.add_parser("adapt", help="fit the packaged student (or --from DIR) to your own labelled clips, in minutes")
    p.add_argument("--manifest", required=True,
                   help="JSONL: audio, label, text (or --asr-transcripts), speaker; optional split (train/dev/test)")
    p.add_argument("--out", required=True, help="folder of the adapted checkpoint (written whole at the end, or not at all)")
    p.add_argument("--from", dest="start", default=a.start,
                   help="checkpoint to start from (default: the student packaged with this install)")
    p.add_argument("--export", action="store_true",
                   help="also write the INT8 model `hbaf-edge run --model` loads (hbaf-export all, into OUT/export)")
    p.add_argument("--per-class", type=int, default=None, metavar="N", help="learn from N clips of each label (few-shot)")
    p.add_argument("--asr-transcripts", default=None, metavar="JSONL",
                   help="the recogniser's transcripts of the clips ({\"audio\": ..., \"asr\": ...} lines): used as the texts")
    p.add_argument("--text-branch", choices=TEXT_CHOICES, default=a.text_branch,
                   help="auto (default): frozen unless every text is the recogniser's")
    p.add_argument("--seed", type=int, default=a.seed)
    p.add_argument("--dev-fraction", type=float, default=a.dev_fraction,
                   help="share of the speakers held out for early stopping when the manifest has no dev split (default %(default)s)")
    p.add_argument("--lr", type=float, default=a.lr)
    p.add_argument("--max-utts", type=int, default=a.max_utts, help="clips per batch (default %(default)s)")
    p.add_argument("--min-steps", type=int, default=a.min_steps, help="optimizer steps to plan for (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--patience", type=int, default=a.patience)
    p.add_argument("--augment", type=int, default=a.augment, metavar="N",
                   help="degraded copies of every training clip (default %(default)s: the start model already learned them)")
    p.add_argument("--no-balance", action="store_true", help="draw clips uniformly instead of class-balanced")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="feature-extraction processes (default: all cores)")
    p.set_defaults(fn=cmd_adapt)
    return ap


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
