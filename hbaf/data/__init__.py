"""Datasets: the Record type, loaders (manifest, MELD.Raw, IEMOCAP) and the MELD-TTS corpus builder."""

from hbaf.data.records import SPLITS, Record

__all__ = ["Record", "SPLITS"]
