"""Rotation conversions and Procrustes: roma where fitkit uses it, fitkit's own code against roma,
and both against independent references (SciPy's rotations, NumPy's SVD, finite differences)."""
import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.eval.metrics import pa_mpjpe, procrustes_align
from fitkit.fitting.rotations import (axis_angle_to_rot6d, matrix_to_axis_angle, matrix_to_rot6d,
                                      rot6d_to_axis_angle, rot6d_to_matrix)

F64 = torch.float64
ANGLES = [0.0, 1e-9, 1e-6, 1e-3, 0.1, 1.0, 2.0, 3.0, np.pi - 1e-4, np.pi - 1e-7]


def rotvecs(angles, seed=0):
    g = np.random.default_rng(seed)
    axes = g.normal(size=(len(angles), 3))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True) * np.asarray(angles)[:, None]


def test_matrix_to_axis_angle_matches_scipy_from_zero_to_pi():
    r = rotvecs(ANGLES)
    R = torch.from_numpy(Rotation.from_rotvec(r).as_matrix())
    out = matrix_to_axis_angle(R).numpy()
    np.testing.assert_allclose(out, Rotation.from_matrix(R.numpy()).as_rotvec(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(out, r, atol=1e-9, rtol=0)  # angle in [0, pi): the same vector back
    # at exactly pi the sign is free: both +-r are right, and the angle is pi
    half_turn = matrix_to_axis_angle(torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64)))
    assert torch.allclose(half_turn.abs(), torch.tensor([np.pi, 0.0, 0.0], dtype=F64), atol=1e-12)
    # batch shapes are kept
    assert matrix_to_axis_angle(torch.eye(3).expand(2, 5, 3, 3)).shape == (2, 5, 3)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-4, 1.0, 3.0, np.pi - 1e-3])
def test_axis_angle_round_trip_has_the_identity_jacobian(angle):
    """matrix_to_axis_angle(axis_angle_to_matrix(r)) = r for angles below pi, so its Jacobian is I:
    a check of both directions' gradients at 0 and towards pi (float64 autograd)."""
    r = torch.from_numpy(rotvecs([angle] * 4, seed=1)).requires_grad_()
    jac = torch.autograd.functional.jacobian(lambda x: matrix_to_axis_angle(axis_angle_to_matrix(x)), r)
    want = torch.eye(3, dtype=F64).expand(4, 3, 3)
    got = torch.stack([jac[i, :, i] for i in range(4)])
    tol = 1e-6 if angle > 3.0 else 1e-9  # conditioning falls as the angle nears pi
    torch.testing.assert_close(got, want, atol=tol, rtol=0)


def test_rot6d_gradients_pass_gradcheck_including_the_zero_pose():
    g = torch.Generator().manual_seed(2)
    generic = torch.randn(5, 6, generator=g, dtype=F64)
    identity = matrix_to_rot6d(torch.eye(3, dtype=F64)).expand(3, 6) + 1e-7 * torch.randn(3, 6, generator=g, dtype=F64)
    near_pi = axis_angle_to_rot6d(torch.from_numpy(rotvecs([np.pi - 1e-2] * 3, seed=3)))
    for x in (generic, identity, near_pi):
        assert torch.autograd.gradcheck(rot6d_to_axis_angle, (x.clone().requires_grad_(),))
        assert torch.autograd.gradcheck(rot6d_to_matrix, (x.clone().requires_grad_(),))


def test_rot6d_to_matrix_equals_roma_gram_schmidt_and_gives_rotations():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 6, generator=g, dtype=F64, requires_grad=True)
    ours = rot6d_to_matrix(x)
    theirs = roma.special_gramschmidt(x.unflatten(-1, (2, 3)).transpose(-1, -2))
    torch.testing.assert_close(ours, theirs, atol=1e-15, rtol=0)
    g1, = torch.autograd.grad(ours.sum(), x)
    g2, = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-14, rtol=0)
    R = ours.detach()
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3, dtype=F64).expand(64, 3, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=F64), atol=1e-12, rtol=0)
    # the first column is the normalized first vector
    torch.testing.assert_close(R[:, :, 0], torch.nn.functional.normalize(x[:, :3].detach(), dim=1))
    # round trip through axis-angle
    r = torch.from_numpy(rotvecs(ANGLES[:-2], seed=5))
    torch.testing.assert_close(rot6d_to_axis_angle(axis_angle_to_rot6d(r)), r, atol=1e-9, rtol=0)


def test_fitkits_rodrigues_agrees_with_roma_away_from_zero():
    """fitkit keeps its own axis-angle -> matrix (series below 1e-2 rad: exact gradients near zero in
    float32, docs/conventions.md); away from zero both are the same Rodrigues formula."""
    r = torch.from_numpy(rotvecs([1e-2, 0.3, 1.0, 2.5, np.pi - 1e-6], seed=6))
    torch.testing.assert_close(axis_angle_to_matrix(r), roma.rotvec_to_rotmat(r), atol=1e-14, rtol=0)


# ---------------------------------------------------------------- Procrustes
def umeyama_numpy(x, y):
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    U, S, Vt = np.linalg.svd(yc.T @ xc)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xc ** 2).sum()
    return s * xc @ R.T + my


def test_procrustes_matches_numpy_umeyama_and_roma():
    g = torch.Generator().manual_seed(7)
    gt = torch.randn(32, 24, 3, generator=g, dtype=F64)
    R = roma.random_rotmat(32, dtype=F64)
    pred = 0.7 * gt @ R.transpose(1, 2) + 0.3 + 0.05 * torch.randn(32, 24, 3, generator=g, dtype=F64)
    pred[:16] *= torch.tensor([-1.0, 1.0, 1.0], dtype=F64)  # these need a reflection, which is not allowed
    ours = procrustes_align(pred, gt)
    ref = np.stack([umeyama_numpy(p, q) for p, q in zip(pred.numpy(), gt.numpy())])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12, rtol=0)
    Rr, t, s = roma.rigid_points_registration(pred, gt, compute_scaling=True)
    theirs = s[:, None, None] * pred @ Rr.transpose(1, 2) + t[:, None]
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    # a rotated, scaled and shifted copy aligns exactly
    exact = 2.0 * gt @ R.transpose(1, 2) - 1.0
    assert float(pa_mpjpe(exact, gt).max()) < 1e-12


def test_procrustes_of_coincident_points_is_finite():
    """Where roma divides by a zero variance, fitkit's scale is 0: every point goes to gt's centroid."""
    gt = torch.randn(1, 24, 3, dtype=F64)
    out = procrustes_align(torch.zeros(1, 24, 3, dtype=F64), gt)
    torch.testing.assert_close(out, gt.mean(dim=1, keepdim=True).expand(1, 24, 3))
