"""Monocular fits of the pose2sim dev set against its multi-view reference (the older name of
``tools/eval_real.py``, kept for the commands in the docs).

Everything is in :mod:`fitkit.eval.real`; this passes its arguments on to
``tools/eval_real.py`` (``--recipes`` is ``--methods``; ``--clean`` is accepted
and ignored: both all and clean frames are always scored). Never run on the
held-out demos (``Demo_SinglePerson``, ``Demo_Batch``).

Usage::

    OMP_NUM_THREADS=1 python tools/devset_video_recipe.py [--recipes mediapipe,start,video,demo] [--set k=v ...]
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> None:
    path = Path(__file__).resolve().parent / "eval_real.py"
    spec = importlib.util.spec_from_file_location("eval_real", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([a for a in sys.argv[1:] if a != "--clean"])


if __name__ == "__main__":
    main()
