"""fitkit: optimization-centric fitting of SMPL-family body models to image cues."""

__version__ = "0.1.0"
