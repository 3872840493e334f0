"""The LM Jacobian (analytic body derivatives + forward-mode terms) against autograd."""
from __future__ import annotations

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.synthetic import make_keypoint_example, sample_body_poses
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import prepare_init
from fitkit.fitting.objective import Objective, WeightedTerm
from fitkit.fitting.params import ParamLayout
from fitkit.priors.gmm import fit_gmm
from fitkit.terms.base import Needs, SetupContext, Term, get_term_class


class JointHeights(Term):
    """Reads joints and a parameter without declaring anything: the generic path."""

    def needs(self):
        return Needs(joints=True)

    def residuals(self, batch):
        return batch.joints[:, :, 1] * batch.params["betas"][:, :1] + batch.params["transl"][:, 2:]


@pytest.fixture(scope="module")
def setup():
    model = load_body_model("open", num_betas=10, dtype=torch.float64)
    ex = make_keypoint_example(model, 5, noise_px=1.0, seed=4)
    cam = build_fit_camera({"mode": "crop"}, ex.observations, dtype=torch.float64)
    init, _ = prepare_init(ex.init, model, 5, device="cpu", dtype=torch.float64)
    ctx = SetupContext(ex.observations, model, cam, init, torch.device("cpu"), torch.float64)
    _, poses = sample_body_poses(500, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    specs = {
        "keypoints": ("keypoints2d", {"sigma": 50.0, "scale_by_size": True}),
        "gmm": ("gmm", {"gmm": fit_gmm(poses.numpy(), num_components=3, iterations=10)}),
        "bending": ("bending", {}), "shape": ("shape_l2", {}), "depth": ("camera_depth", {}),
        "init": ("init_l2", {"params": {"body_pose": 2.0, "global_orient": 1.0}}),
    }
    terms = []
    for key, (kind, args) in specs.items():
        t = get_term_class(kind)(**args)
        t.setup(ctx)
        terms.append(WeightedTerm(key, t, 0.7))
    terms.append(WeightedTerm("generic", JointHeights(), 2.0))
    return model, cam, init, terms


@pytest.mark.parametrize("free", [["global_orient", "body_pose", "betas", "transl"], ["body_pose", "transl"],
                                  ["betas"]])
def test_jacobian_matches_autograd(setup, free):
    model, cam, init, terms = setup
    widths = {"global_orient": 3, "body_pose": 69, "betas": 10, "transl": 3}
    layout = ParamLayout(free, widths)
    obj = Objective(model, terms, layout, init, init, cam)
    g = torch.Generator().manual_seed(0)
    x = layout.encode(init) + 0.05 * torch.randn(5, layout.dim, generator=g, dtype=torch.float64)
    idx = torch.tensor([4, 0, 2])
    r, J = obj.residuals_and_jacobian(x[idx], idx)
    torch.testing.assert_close(r, obj.residuals(x[idx], idx), rtol=1e-12, atol=1e-12)
    full = torch.autograd.functional.jacobian(lambda xx: obj.residuals(xx, idx), x[idx])
    ref = torch.stack([full[b, :, b] for b in range(3)])
    assert J.shape == ref.shape
    torch.testing.assert_close(J, ref, rtol=1e-9, atol=1e-9)
