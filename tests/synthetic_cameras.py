"""Synthetic calibrated cameras for the multi-view tests."""
from __future__ import annotations

import numpy as np


def look_at(centre, target=(0.0, 0.0, 1.0)):
    """World -> camera R (3, 3), t (3,) of a camera at ``centre`` looking at ``target`` (z up in the world)."""
    c = np.asarray(centre, float)
    z = np.asarray(target, float) - c
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ c
