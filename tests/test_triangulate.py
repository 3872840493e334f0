"""fitkit.geometry.triangulate: DLT, outlier-view rejection, left/right relabelling, epipolar geometry.

Synthetic scenes: 4 cameras on a circle looking at the origin, known world points.
"""
from __future__ import annotations

import numpy as np
import pytest

from fitkit.geometry.triangulate import (
    choose_labellings,
    epipolar_distance,
    flip_labels,
    fundamental_matrix,
    project,
    projection_matrix,
    reprojection_errors,
    triangulate_dlt,
    triangulate_robust,
)

from .synthetic_cameras import look_at


def _cameras(V=4, radius=4.0):
    K = np.array([[1200.0, 0, 540], [0, 1200.0, 960], [0, 0, 1]])
    Ps = []
    for a in np.linspace(0, 2 * np.pi, V, endpoint=False) + 0.3:
        R, t = look_at((radius * np.cos(a), radius * np.sin(a), 1.5 + 0.2 * np.sin(3 * a)))
        Ps.append(projection_matrix(K, R, t))
    return np.stack(Ps)


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 2.0], (n, 3))


def test_exact_recovery_from_noise_free_projections():
    P = _cameras()
    X = _points(50)
    x = project(P, X)  # (50, 4, 2)
    assert x.shape == (50, 4, 2) and np.isfinite(x).all()
    # the projection itself against a plain loop
    Xh = np.append(X[7], 1.0)
    for v in range(4):
        u = P[v] @ Xh
        np.testing.assert_allclose(x[7, v], u[:2] / u[2])
    got = triangulate_dlt(P, x, np.ones((50, 4)))
    np.testing.assert_allclose(got, X, atol=1e-9)
    # any two views suffice; weights do not matter without noise
    got2 = triangulate_dlt(P, x, np.array([0.0, 0.3, 0.0, 0.9]))
    np.testing.assert_allclose(got2, X, atol=1e-8)
    # batched over extra leading axes
    got3 = triangulate_dlt(P, x.reshape(5, 10, 4, 2), np.ones((5, 10, 4)))
    np.testing.assert_allclose(got3.reshape(50, 3), X, atol=1e-9)
    assert reprojection_errors(P, got, x).max() < 1e-6


def test_fewer_than_two_views_is_nan_and_nonfinite_points_are_skipped():
    P = _cameras()
    X = _points(3)
    x = project(P, X)
    w = np.ones((3, 4))
    w[0, 1:] = 0.0          # one view only
    x[1, 2] = np.nan        # a non-finite 2D point counts as not seen
    out = triangulate_dlt(P, x, w)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1:], X[1:], atol=1e-8)


def test_weights_pull_towards_the_confident_view():
    P = _cameras()
    X = _points(20, seed=3)
    x = project(P, X)
    x_noisy = x.copy()
    x_noisy[:, 0] += 8.0  # view 0 off by 8 px
    low = triangulate_dlt(P, x_noisy, np.array([0.05, 1, 1, 1]))
    high = triangulate_dlt(P, x_noisy, np.array([1.0, 1, 1, 1]))
    assert np.linalg.norm(low - X, axis=1).mean() < np.linalg.norm(high - X, axis=1).mean() / 3


def test_a_corrupted_view_is_rejected():
    P = _cameras()
    X = _points(40, seed=1)
    rng = np.random.default_rng(2)
    x = project(P, X) + rng.normal(0, 0.5, (40, 4, 2))
    bad = np.arange(40) % 2 == 0
    x[bad, 2] += rng.uniform(60, 150, (bad.sum(), 2))  # view 2 wrong for half the points
    plain = triangulate_dlt(P, x, np.ones((40, 4)))
    res = triangulate_robust(P, x, np.ones((40, 4)), max_error=15.0)
    assert (~res.used[bad, 2]).all() and res.used[bad][:, [0, 1, 3]].all()
    assert res.used[~bad].all()  # the clean points keep all four views
    assert (res.num_views[bad] == 3).all()
    err_plain = np.linalg.norm(plain - X, axis=1)[bad]
    err_robust = np.linalg.norm(res.points3d - X, axis=1)[bad]
    assert err_robust.max() < 0.01 < err_plain.min()
    assert (res.errors[bad, 2] > 15).all() and (res.mean_error < 2).all()
    # never below min_views: with two views nothing is dropped
    two = triangulate_robust(P, x, np.array([0, 0, 1.0, 1.0]), max_error=15.0)
    assert (two.num_views == 2).all()
    with pytest.raises(ValueError, match="min_views"):
        triangulate_robust(P, x, np.ones((40, 4)), min_views=1)


def test_flip_labels():
    pts = np.arange(12.0).reshape(1, 6, 2)
    perm = [0, 2, 1, 3, 5, 4]
    out = flip_labels(pts, perm)
    np.testing.assert_array_equal(out[0, 1], pts[0, 2])
    np.testing.assert_array_equal(flip_labels(out, perm), pts)


def test_a_swapped_view_is_relabelled_with_hysteresis():
    P = _cameras()
    T, K = 30, 8
    perm = np.array([0, 1, 3, 2, 5, 4, 7, 6])  # 0, 1 centre; (2, 3), (4, 5), (6, 7) left/right pairs
    rng = np.random.default_rng(4)
    base = _points(K, seed=5)
    base[[3, 5, 7]] = base[[2, 4, 6]] + [0.3, 0.0, 0.0]  # the right side is 30 cm off the left
    X = base[None] + rng.normal(0, 0.01, (T, K, 3)).cumsum(axis=0)
    x = np.moveaxis(project(P, X), 1, 2) + rng.normal(0, 0.5, (T, 4, K, 2))  # (T, V, K, 2)
    truth = np.zeros((T, 4), bool)
    truth[8:20, 1] = True          # view 1 swapped for 12 frames
    truth[12, 3] = True            # and view 3 on one frame
    x_obs = x.copy()
    for t, v in zip(*np.nonzero(truth)):
        x_obs[t, v] = x[t, v][perm]
    w = np.ones((T, 4, K))
    res = choose_labellings(P, x_obs, w, perm, switch_cost=5.0)
    np.testing.assert_array_equal(res.flipped, truth)
    assert (res.cost < 3).all() and (res.cost_unflipped[truth.any(axis=1)] > 10).all()
    # strong hysteresis keeps the single-frame swap out (and the long one in)
    sticky = choose_labellings(P, x_obs, w, perm, switch_cost=60.0)
    assert sticky.flipped[8:20, 1].all() and not sticky.flipped[:, 3].any()
    # relabelled, the triangulation reprojects within the noise
    fixed = np.where(res.flipped[..., None, None], x_obs[:, :, perm], x_obs)
    tri = triangulate_dlt(P, np.moveaxis(fixed, 1, 2), np.ones((T, K, 4)))
    assert np.linalg.norm(tri - X, axis=-1).max() < 0.02


def test_epipolar_distance_zero_for_matches_and_large_otherwise():
    P = _cameras()
    X = _points(10, seed=6)
    x = project(P, X)
    F = fundamental_matrix(P[0], P[2])
    assert epipolar_distance(F, x[:, 0], x[:, 2]).max() < 1e-6
    shuffled = epipolar_distance(F, x[:, 0], x[::-1, 2])
    assert np.median(shuffled) > 10
    # symmetric: swapping the roles of the views gives the same distances
    np.testing.assert_allclose(epipolar_distance(fundamental_matrix(P[2], P[0]), x[::-1, 2], x[:, 0]), shuffled,
                               rtol=1e-6)
