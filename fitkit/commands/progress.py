"""Progress bars of the commands that fit: one bar over the solver iterations of several fits.

A command runs a list of fits (the frame batches of ``fitkit fit``, the three
phases of ``fitkit demo --video``); each fit runs its recipe's stages. The bar
advances by one step per solver iteration, so it moves during a batch, and a
stage that stops early (every sample converged) jumps to its end. The postfix
names the fit, the stage, the iteration and the samples still running.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence


def stage_iterations(recipe) -> dict[str, int]:
    """{stage name: solver iterations} of a recipe, in order (at least 1 step per stage)."""
    return {st.name: max(1, int(st.solver.get("iterations", 1))) for st in recipe.stages}


class FitProgress:
    """A tqdm bar over ``plan``: one ``(label, {stage name: iterations})`` per fit, in run order.

    Use ``begin(i)`` before fit ``i``, pass ``stage`` as the engine's ``progress``
    callback, ``end()`` after it and ``close()`` once. Disabled (``enabled=False``),
    every call does nothing.
    """

    def __init__(self, plan: Sequence[tuple[str, dict[str, int]]], enabled: bool, desc: str = "fit"):
        self.plan = list(plan)
        self.starts, total = [], 0
        for _, stages in self.plan:
            self.starts.append(total)
            total += max(1, sum(stages.values()))
        self.total = total
        self.current = 0
        self.bar = None
        if enabled and self.plan:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="it", file=sys.stderr, dynamic_ncols=True, desc=desc,
                            mininterval=0.5)

    def _move_to(self, position: int) -> None:
        if self.bar is not None and position > self.bar.n:
            self.bar.update(min(position, self.total) - self.bar.n)

    def _stage_offset(self, name: str) -> tuple[int, int]:
        offset = 0
        for stage, its in self.plan[self.current][1].items():
            if stage == name:
                return offset, its
            offset += its
        return 0, max(1, offset)

    def begin(self, i: int) -> None:
        self.current = i
        self._move_to(self.starts[i])

    def stage(self, name: str, it: int, running: int, n: int) -> None:
        """The engine's ``progress(stage_name, iteration, num_running, num_samples)`` callback."""
        if self.bar is None:
            return
        offset, its = self._stage_offset(name)
        self._move_to(self.starts[self.current] + offset + min(it + 1, its))
        label = self.plan[self.current][0]
        self.bar.set_postfix_str(f"{label} ({n} samples): {name} it {it + 1}/{its}, running {running}",
                                 refresh=False)

    def end(self, note: Optional[str] = None) -> None:
        """Fit ``current`` is done: the bar jumps to its end; ``note`` replaces the postfix."""
        i = self.current
        self._move_to(self.starts[i] + max(1, sum(self.plan[i][1].values())))
        if self.bar is not None and note is not None:
            self.bar.set_postfix_str(note, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
