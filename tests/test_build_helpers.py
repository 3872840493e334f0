"""The open-body build's numerical helpers, on synthetic data (no anny needed)."""
import numpy as np

from fitkit.build.open_body_from_anny import (
    _Rig,
    _rotation_between,
    fit_shape_regressor,
    linear_in_betas,
    pca_shape_space,
)


def test_rotation_between_maps_a_onto_b():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    b[0] = a[0] * 2.0  # parallel vectors: identity
    r = _rotation_between(a, b)
    assert np.allclose(r @ np.swapaxes(r, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1.0)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    assert np.allclose(np.einsum("nij,nj->ni", r, unit(a)), unit(b), atol=1e-12)
    assert np.allclose(r[0], np.eye(3), atol=1e-12)


def test_pca_betas_are_unit_variance_and_reconstruct():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 20, 3))
    codes = rng.normal(size=(500, 3)) * [3.0, 1.0, 0.2]
    meshes = 1.0 + np.einsum("nk,kvd->nvd", codes, basis)
    mean, dirs, betas, explained = pca_shape_space(meshes, 3)
    assert np.allclose(betas.std(0, ddof=1), 1.0)
    assert np.allclose(mean + np.einsum("vdk,nk->nvd", dirs, betas), meshes, atol=1e-9)
    assert np.all(np.diff(explained) < 0) and np.isclose(explained.sum(), 1.0)


def test_shape_regressor_recovers_a_point_that_is_linear_in_shape():
    rng = np.random.default_rng(2)
    v, k = 60, 4
    template = rng.normal(size=(v, 3))
    shapedirs = rng.normal(scale=0.05, size=(v, 3, k))
    true_w = np.zeros(v)
    true_w[[3, 7, 11]] = [0.5, 0.3, 0.2]
    betas = rng.normal(size=(200, k))
    meshes = template + np.einsum("vdk,nk->nvd", shapedirs, betas)
    target = np.einsum("v,nvd->nd", true_w, meshes)
    t0, tdirs = linear_in_betas(target, betas)
    cand = np.arange(30)
    w = fit_shape_regressor(template, shapedirs, t0, tdirs, cand)
    assert np.isclose(w.sum(), 1.0)
    pred = np.einsum("c,ncd->nd", w, meshes[:, cand])
    assert np.abs(pred - target).max() < 1e-4


def test_rig_rotates_subtrees_about_their_head():
    # a chain 0 -> 1 -> 2 along +x; bend at bone 1 by 90 degrees about z
    heads = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]])
    rig = _Rig(["a", "b", "c"], [-1, 0, 1], heads)
    rz = np.array([[[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]])
    rig.rotate_subtree("b", rz, rig.head("b"))
    assert np.allclose(rig.posed_heads()[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    # a point halfway along bone b, skinned half to a and half to b
    point = np.array([[[1.5, 0, 0]]])
    weights = np.array([[0.5, 0.5, 0.0]])
    assert np.allclose(rig.pose_points(point, weights)[0, 0], [1.25, 0.25, 0])
