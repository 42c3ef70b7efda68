"""HBAF: Heterogeneous Bimodal Attention Fusion (arXiv 2503.06405) for speech emotion recognition."""

__version__ = "0.1.0"
