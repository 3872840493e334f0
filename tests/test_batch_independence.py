"""A frame's fit does not depend on the frames fitted with it (docs/fitting.md, "Batch independence").

The same 24 synthetic frames are fitted with a small two-stage recipe like the
demo's (camera stage on the torso, then the whole body against robust
keypoints, the open GMM pose prior and a shape prior), both stages with the
solver under test, in batches of 24, 8 and 1, in another order, and next to a
corrupted frame (NaN keypoints, 1e6-pixel keypoints, all confidences zero).
Every untouched frame's parameters must be bit-identical to its fit in the
batch of 24, and the corrupted frame must carry the right flag.
"""
from __future__ import annotations

import copy

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe, recipe_from_dict

NAMES = ("global_orient", "body_pose", "betas", "transl")
SOLVERS = ("adam", "lbfgs", "lm")
N = 24


def small_recipe(solver: str):
    data = copy.deepcopy(load_recipe("demo").data)
    for st, iters in zip(data["stages"], (4, 8)):
        st["solver"] = {"type": solver, "iterations": iters}
    return recipe_from_dict(data, source=f"small demo recipe with {solver}")


class Case:
    """Model, frames and recipe of one (solver, dtype), with the batch-of-24 fit as reference."""

    def __init__(self, solver: str, dtype: torch.dtype):
        self.model = load_body_model("open", num_betas=10, dtype=dtype)
        self.ex = make_keypoint_example(self.model, N, noise_px=2.0, seed=11)
        self.recipe = small_recipe(solver)
        self.reference = self.fit(list(range(N)))

    def fit(self, rows, corrupt: str | None = None, at: int = 0):
        """Fit frames ``rows`` in one batch; with ``corrupt``, frame ``rows[at]`` is
        broken that way (NaN or 1e6 pixel coordinates, or all confidences zero)."""
        idx = torch.as_tensor(rows)
        obs = self.ex.observations.subset(idx)
        if corrupt is not None:
            kps = obs.keypoints.clone()
            if corrupt == "nan":
                kps[at, :, :2] = float("nan")
            elif corrupt == "1e6":
                kps[at, :, :2] = 1e6
            else:
                kps[at, :, 2] = 0.0
            obs.keypoints = kps
        return fit(self.model, obs, self.recipe, {k: v[idx] for k, v in self.ex.init.items()})

    def assert_same(self, res, rows, positions=None):
        """Frames ``rows`` of the reference equal ``res``'s rows ``positions`` bit for bit."""
        positions = list(range(len(rows))) if positions is None else positions
        for name in NAMES:
            got = res.params[name][positions]
            want = self.reference.params[name][rows]
            assert torch.equal(got, want), f"{name}: max difference {float((got - want).abs().max()):.3g}"
        for key, energy in self.reference.energies.items():
            assert torch.equal(res.energies[key][positions], energy[rows]), key
        assert torch.equal(res.converged[positions], self.reference.converged[rows])
        assert torch.equal(res.iterations[positions], self.reference.iterations[rows])


_CASES: dict = {}


def case(solver: str, dtype=torch.float32) -> Case:
    key = (solver, dtype)
    if key not in _CASES:
        _CASES[key] = Case(solver, dtype)
    return _CASES[key]


@pytest.mark.parametrize("solver", SOLVERS)
def test_batch_size_does_not_change_a_frame(solver):
    c = case(solver)
    assert not c.reference.nan.any() and not c.reference.no_evidence.any()
    for start in range(0, N, 8):
        rows = list(range(start, start + 8))
        c.assert_same(c.fit(rows), rows)
    for row in (0, 13, 23):  # alone
        c.assert_same(c.fit([row]), [row])


@pytest.mark.parametrize("solver", SOLVERS)
def test_order_does_not_change_a_frame(solver):
    c = case(solver)
    rows = [17, 3, 22, 9, 0, 12, 5, 20, 1, 14]
    c.assert_same(c.fit(rows), rows)


@pytest.mark.parametrize("corrupt", ["nan", "1e6", "zero_conf"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_a_corrupted_neighbour_does_not_change_a_frame(solver, corrupt):
    c = case(solver)
    rows = [8, 9, 10, 0, 11, 12, 13, 14, 15]  # frame 0, broken, among 8..15
    res = c.fit(rows, corrupt=corrupt, at=3)
    keep = [i for i in range(len(rows)) if i != 3]
    c.assert_same(res, [rows[i] for i in keep], positions=keep)
    # the broken frame is flagged as what it is, and never as converged
    assert not bool(res.converged[3])
    if corrupt == "nan":
        assert bool(res.nan[3])
    elif corrupt == "zero_conf":
        assert bool(res.no_evidence[3]) and not bool(res.nan[3])
    for name in NAMES:
        assert torch.isfinite(res.params[name]).all(), name


@pytest.mark.parametrize("solver", SOLVERS)
def test_float64_also_bit_identical(solver):
    c = case(solver, torch.float64)
    rows = list(range(4, 12))
    c.assert_same(c.fit(rows), rows)
    rows = [4, 5, 6, 7, 8, 20, 9, 10, 11]  # frame 20, broken, among 4..11
    res = c.fit(rows, corrupt="nan", at=5)
    keep = [i for i in range(len(rows)) if i != 5]
    c.assert_same(res, [rows[i] for i in keep], positions=keep)
    assert bool(res.nan[5])


def test_keypoint_bound_of_the_converged_flag():
    from fitkit.fitting.camera_setup import build_fit_camera
    from fitkit.fitting.engine import keypoints_within_bound

    model = load_body_model("open", num_betas=10, dtype=torch.float64)
    ex = make_keypoint_example(model, 4, noise_px=2.0, seed=5)
    obs = ex.observations.to(dtype=torch.float64)
    camera = build_fit_camera({"mode": "full"}, obs, dtype=torch.float64, device="cpu")
    gt = {k: ex.gt[k].double() for k in NAMES}
    assert keypoints_within_bound(model, gt, obs, camera).all()  # the true bodies: a few pixels of noise
    kps = obs.keypoints.clone()
    used = kps[..., 2] > 0
    side = (kps[1, used[1], :2].amax(0) - kps[1, used[1], :2].amin(0)).max()
    kps[1, :, 0] += 1.3 * float(side)  # every keypoint of frame 1 moved by more than the person's box
    kps[2, :, :2] = 1e6  # frame 2: beyond the image diagonal too
    kps[3, :, 2] = 0.0  # frame 3: nothing observed, nothing to hold against the fit
    obs.keypoints = kps
    assert keypoints_within_bound(model, gt, obs, camera).tolist() == [True, False, False, True]
