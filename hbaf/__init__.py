"""HBAF: Hierarchical Bimodal Attention Fusion for speech emotion recognition."""

__version__ = "0.1.0"
