"""Checkpoints: a folder with model.safetensors + config.json (+ labels, weights hash) + tokenizer.json.

Never pickle. Every file is written atomically and config.json is written last and
records the sha256 of the weights, so a truncated or mixed-up checkpoint is refused
on load instead of half-loading.

Weights are stored in float32, or in float16 (``save_checkpoint(..., dtype="float16")``:
half the size, how the packaged student ships); every load gives a float32 model.

The packaged student lives in ``hbaf/assets/student/``; the name ``default`` (any
``--checkpoint`` flag, or ``resolve_checkpoint("default")``) means that folder, or the one
``$HBAF_DEFAULT_CHECKPOINT`` names. A folder literally called ``default`` is ``./default``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from hbaf import __version__
from hbaf.contract import TOKENIZER_FILE
from hbaf.errors import HBAFError
from hbaf.io import ASSETS_DIR, PACKAGED_CHECKPOINT, atomic_path, write_json_atomic
from hbaf.model import HBAF, HBAFConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_NAME = "default"  # the --checkpoint value that means the packaged student
DEFAULT_ENV = "HBAF_DEFAULT_CHECKPOINT"  # a folder used instead of the packaged one
PACKAGED_DIR = ASSETS_DIR / PACKAGED_CHECKPOINT
WEIGHT_DTYPES = ("float32", "float16")


def packaged_checkpoint() -> Path:
    """The student checkpoint that ships with this install (``$HBAF_DEFAULT_CHECKPOINT`` overrides it)."""
    override = os.environ.get(DEFAULT_ENV)
    if override:
        folder = Path(override).expanduser()
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise HBAFError(f"${DEFAULT_ENV}={override} is not a checkpoint folder ({WEIGHTS} + {CONFIG}); "
                            "point it at one or unset it")
        return folder
    if not (PACKAGED_DIR / CONFIG).is_file() or not (PACKAGED_DIR / WEIGHTS).is_file():
        raise HBAFError(f"no checkpoint ships with this install ({PACKAGED_DIR} is empty); pass --checkpoint DIR")
    return PACKAGED_DIR


def resolve_checkpoint(path: str | Path) -> Path:
    """``"default"`` -> the packaged checkpoint (see ``packaged_checkpoint``); anything else unchanged."""
    if isinstance(path, str) and path.strip() == DEFAULT_NAME:
        return packaged_checkpoint()
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model: HBAF, out_dir: str | Path, tokenizer_file: str | Path, extra: dict | None = None,
                    dtype: str = "float32") -> Path:
    """Write ``out_dir`` atomically file by file; config.json (with the weights hash) goes last.

    ``dtype="float16"`` stores the floating-point weights in half precision (half the size;
    ``load_checkpoint`` gives them back as float32)."""
    import torch
    from safetensors.torch import save_file

    if dtype not in WEIGHT_DTYPES:
        raise HBAFError(f"checkpoint dtype '{dtype}' is not one of {'|'.join(WEIGHT_DTYPES)}")
    store = getattr(torch, dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to(store) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "hbaf_version": __version__})
    if Path(tokenizer_file).resolve() != (out / TOKENIZER_FILE).resolve():
        with atomic_path(out / TOKENIZER_FILE) as tmp:
            shutil.copyfile(tokenizer_file, tmp)
    meta = {
        "hbaf_version": __version__,
        "config": model.cfg.to_dict(),
        "labels": model.labels,
        "weights_sha256": sha256_file(out / WEIGHTS),
        "weights_dtype": dtype,
        **(extra or {}),
    }
    write_json_atomic(out / CONFIG, meta)
    return out


def checkpoint_dir(path: str | Path) -> Path:
    p = resolve_checkpoint(path)
    if p.is_file() and p.name in (WEIGHTS, CONFIG):
        p = p.parent
    if not p.exists():
        raise HBAFError(f"checkpoint not found: {p}; train one with `hbaf train --out DIR` or check the path")
    if not p.is_dir():
        raise HBAFError(f"{p} is not a checkpoint folder (expected {WEIGHTS} + {CONFIG} inside); pass the folder `hbaf train` wrote")
    return p


def read_meta(path: str | Path) -> dict:
    d = checkpoint_dir(path)
    cfg_file = d / CONFIG
    if not cfg_file.exists():
        raise HBAFError(f"checkpoint {d} has no {CONFIG} (incomplete write?); re-run training or copy the whole folder")
    try:
        meta = json.loads(cfg_file.read_text())
        HBAFConfig.from_dict(meta["config"])
        list(meta["labels"])
    except (ValueError, KeyError, TypeError) as err:
        raise HBAFError(f"{cfg_file} is not a valid HBAF checkpoint config ({err}); re-export the checkpoint") from err
    return meta


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[HBAF, dict]:
    """Load (model in eval mode, float32, metadata). Verifies the weights hash and that config and weights agree."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = checkpoint_dir(path)
    meta = read_meta(d)
    wfile = d / WEIGHTS
    if not wfile.exists():
        raise HBAFError(f"checkpoint {d} has no {WEIGHTS}; re-run training or copy the whole folder")
    if meta.get("weights_sha256") and sha256_file(wfile) != meta["weights_sha256"]:
        raise HBAFError(f"{wfile} is truncated or does not belong to {d / CONFIG} (sha256 mismatch); copy the checkpoint again or retrain")
    try:
        state = load_file(str(wfile), device=map_location)
    except (SafetensorError, OSError, ValueError) as err:
        raise HBAFError(f"{wfile} is not a readable safetensors file ({err}); copy the checkpoint again or retrain") from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # float16 storage -> float32
    cfg = HBAFConfig.from_dict(meta["config"])
    model = HBAF(cfg, meta["labels"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(first[1:2]) if len(first) > 1 else first[0]
        raise HBAFError(f"weights in {wfile} do not match its config.json ({detail[:200]}); use the config saved with these weights") from err
    model.eval()
    return model, meta


def tokenizer_path(path: str | Path) -> Path:
    return checkpoint_dir(path) / TOKENIZER_FILE
