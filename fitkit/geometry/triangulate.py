"""Batched, confidence-weighted DLT triangulation with outlier-view rejection and left/right relabelling.

Conventions: V views with (3, 4) projection matrices ``P = K [R | t]`` (world ->
pixels of an ideal pinhole camera, so the 2D points must be *undistorted*
first, e.g. with :func:`fitkit.io.cameras.undistort_points`); world points in
the calibration's units (meters); pixels as in ``docs/conventions.md``.

* :func:`triangulate_dlt`: the linear (DLT) solution of every point from the
  views with a positive weight; each view contributes its two equations
  ``x P3 - P1``, ``y P3 - P2`` scaled to unit norm and multiplied by its weight
  (the keypoint's confidence), solved by SVD. Batched over any leading axes.
* :func:`triangulate_robust`: DLT, then repeatedly drop the view whose removal
  leaves the other views agreeing best, while its reprojection error against
  the point triangulated from the *other* views is above ``max_error`` px and
  more than ``min_views`` views remain.
* :func:`choose_labellings`: which views have their left/right labels swapped
  in each frame: every combination of per-view flips is triangulated, scored by
  the capped mean reprojection error, and a Viterbi pass over time picks the
  sequence of combinations with the lowest total score plus ``switch_cost`` per
  view that changes its labelling between frames (hysteresis) and
  ``flip_cost`` per flipped view and frame (so that, of a combination and its
  mirror, which score the same, the one with fewer flips wins).
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


def projection_matrix(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 4) ``K [R | t]`` from a (3, 3) K, a (3, 3) world -> camera R and a (3,) t."""
    return np.asarray(K, dtype=np.float64) @ np.concatenate(
        [np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(3, 1)], axis=1)


def _check(P, points, weights):
    P = np.asarray(P, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] != (3, 4):
        raise ValueError(f"P must be (V, 3, 4) projection matrices, got {P.shape}")
    V = P.shape[0]
    if points.ndim < 2 or points.shape[-2:] != (V, 2):
        raise ValueError(f"points must be (..., V={V}, 2), got {points.shape}")
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), points.shape[:-1])
    weights = np.where(np.isfinite(weights) & np.isfinite(points).all(axis=-1), np.clip(weights, 0, None), 0.0)
    return P, np.nan_to_num(points), weights


def triangulate_dlt(P, points, weights) -> np.ndarray:
    """Weighted linear triangulation.

    Args:
        P: (V, 3, 4) projection matrices (pixels of undistorted images).
        points: (..., V, 2) pixel coordinates of each point in each view.
        weights: (..., V) >= 0; a view with weight 0 (or a non-finite point)
            is not used.
    Returns:
        (..., 3) world points; NaN where fewer than 2 views have a weight > 0
        or the solution is at infinity.
    """
    P, x, w = _check(P, points, weights)
    # rows: w * (x P3 - P1), w * (y P3 - P2), each scaled to unit norm first
    rows = np.stack([x[..., 0:1] * P[:, 2] - P[:, 0], x[..., 1:2] * P[:, 2] - P[:, 1]], axis=-2)  # (..., V, 2, 4)
    norm = np.linalg.norm(rows, axis=-1, keepdims=True)
    rows = rows / np.where(norm > 0, norm, 1.0) * w[..., None, None]
    A = rows.reshape(*rows.shape[:-3], -1, 4)
    _, _, vt = np.linalg.svd(A)
    X = vt[..., -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = X[..., :3] / X[..., 3:4]
    bad = ((w > 0).sum(axis=-1) < 2) | (np.abs(X[..., 3]) < 1e-12) | ~np.isfinite(out).all(axis=-1)
    out[bad] = np.nan
    return out


def project(P, X) -> np.ndarray:
    """(..., V, 2) pixels of world points X (..., 3) in every view; NaN behind a camera."""
    P = np.asarray(P, dtype=np.float64)
    Xh = np.concatenate([np.asarray(X, dtype=np.float64), np.ones(np.shape(X)[:-1] + (1,))], axis=-1)
    uvw = np.einsum("vij,...j->...vi", P, Xh)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / uvw[..., 2:3]
    uv[uvw[..., 2] <= 0] = np.nan
    return uv


def reprojection_errors(P, X, points) -> np.ndarray:
    """(..., V) pixel distance between ``points`` (..., V, 2) and the projections of X (..., 3)."""
    return np.linalg.norm(project(P, X) - np.asarray(points, dtype=np.float64), axis=-1)


@dataclass
class Triangulation:
    """The result of :func:`triangulate_robust` for points of shape (...).

    Attributes:
        points3d: (..., 3) world points, NaN where fewer than 2 views were usable.
        used: (..., V) bool, the views each point was triangulated from.
        errors: (..., V) reprojection error in px of every view with a positive
            weight (rejected views included: their error against the kept
            views' point); NaN for views without the point.
        num_views: (...,) int, ``used.sum(-1)``.
        mean_error: (...,) mean error over the used views (NaN if none).
    """

    points3d: np.ndarray
    used: np.ndarray
    errors: np.ndarray

    @property
    def num_views(self) -> np.ndarray:
        return self.used.sum(axis=-1)

    @property
    def mean_error(self) -> np.ndarray:
        e = np.where(self.used, self.errors, 0.0)
        n = self.used.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, e.sum(axis=-1) / np.maximum(n, 1), np.nan)


def triangulate_robust(P, points, weights, *, max_error: float = 20.0, min_views: int = 2) -> Triangulation:
    """DLT with outlier-view rejection.

    Starting from every view with a positive weight, repeat: for each point with
    more than ``min_views`` views, triangulate it without each of its views in
    turn; the view whose removal leaves the others agreeing best (lowest mean
    reprojection error) is dropped if its own error against the others' point
    is above ``max_error`` px. Stop when no point drops a view. Then
    triangulate from the views kept.

    Args:
        P: (V, 3, 4); points: (..., V, 2) undistorted pixels; weights: (..., V).
        max_error: px; a view farther than this from the other views' point is rejected.
        min_views: >= 2; views are never dropped below this count.
    """
    if min_views < 2:
        raise ValueError(f"min_views must be >= 2, got {min_views}")
    P, x, w = _check(P, points, weights)
    V = P.shape[0]
    used = w > 0
    for _ in range(max(V - min_views, 0)):
        can = used.sum(axis=-1) > min_views
        if not can.any():
            break
        own = np.full(used.shape, np.nan)       # view j's error against the others' point
        rest = np.full(used.shape, np.inf)      # the others' mean error at that point
        for j in range(V):
            keep = used.copy()
            keep[..., j] = False
            Xj = triangulate_dlt(P, x, np.where(keep, w, 0.0))
            e = reprojection_errors(P, Xj, x)
            own[..., j] = e[..., j]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(keep, e, 0.0).sum(axis=-1) / np.maximum(keep.sum(axis=-1), 1)
            rest[..., j] = np.where(used[..., j] & can & np.isfinite(r), r, np.inf)
        worst = rest.argmin(axis=-1)  # leaving it out makes the others agree best
        worst_err = np.take_along_axis(own, worst[..., None], axis=-1)[..., 0]
        drop = can & np.isfinite(np.take_along_axis(rest, worst[..., None], axis=-1)[..., 0]) & (worst_err > max_error)
        if not drop.any():
            break
        onehot = np.arange(V) == worst[..., None]
        used = used & ~(onehot & drop[..., None])
    X = triangulate_dlt(P, x, np.where(used, w, 0.0))
    errors = reprojection_errors(P, X, x)
    # a rejected view's error is measured against the kept views' point; views without the point: NaN
    errors = np.where(w > 0, errors, np.nan)
    return Triangulation(points3d=X, used=used & np.isfinite(X).all(axis=-1, keepdims=True), errors=errors)


def flip_labels(points: np.ndarray, permutation) -> np.ndarray:
    """``points[..., permutation, :]``: the keypoints with their left/right labels exchanged
    (``permutation`` maps each keypoint to its mirror, the centre ones to themselves)."""
    return np.asarray(points)[..., np.asarray(permutation), :]


@dataclass
class Labelling:
    """The result of :func:`choose_labellings`.

    Attributes:
        flipped: (T, V) bool, True where view v's left/right labels are swapped in frame t.
        cost: (T,) the chosen combination's score (capped mean reprojection error, px).
        cost_unflipped: (T,) the score with no view flipped.
    """

    flipped: np.ndarray
    cost: np.ndarray
    cost_unflipped: np.ndarray


def choose_labellings(P, points, weights, permutation, *, cap: float = 50.0, switch_cost: float = 20.0,
                      flip_cost: float = 0.5) -> Labelling:
    """Per frame and view, whether the view's left/right labels are swapped.

    Args:
        P: (V, 3, 4) projection matrices.
        points: (T, V, K, 2) undistorted pixels of one person's K keypoints in
            T consecutive frames (any value where the weight is 0).
        weights: (T, V, K) confidences (0: not seen).
        permutation: (K,) keypoint index -> index of its left/right mirror.
        cap: px; errors are clipped to this before averaging (one wild point
            does not outweigh the rest).
        switch_cost: px added per view whose labelling changes between two frames.
        flip_cost: px added per flipped view in each frame.
    Returns:
        :class:`Labelling`. Frames where a view sees nothing keep that view
        unflipped unless hysteresis says otherwise (flipping it costs only ``flip_cost``).
    """
    P = np.asarray(P, dtype=np.float64)
    x = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    T, V, K = w.shape
    if x.shape != (T, V, K, 2):
        raise ValueError(f"points must be (T, V, K, 2) = {(T, V, K, 2)}, got {x.shape}")
    perm = np.asarray(permutation)
    states = np.array(list(itertools.product([False, True], repeat=V)))  # (S, V)
    S = len(states)
    xs = np.where(states[None, :, :, None, None], x[:, None][..., perm, :], x[:, None])  # (T, S, V, K, 2)
    ws = np.where(states[None, :, :, None], w[:, None][..., perm], w[:, None])           # (T, S, V, K)
    xt = np.moveaxis(xs, 2, 3)  # (T, S, K, V, 2)
    wt = np.moveaxis(ws, 2, 3)
    X = triangulate_dlt(P, xt, wt)  # (T, S, K, 3)
    err = np.minimum(np.nan_to_num(reprojection_errors(P, X, xt), nan=cap), cap)  # (T, S, K, V)
    usable = wt * np.isfinite(X).all(axis=-1, keepdims=True)
    total = usable.sum(axis=(-1, -2))
    score = np.where(total > 0, (err * usable).sum(axis=(-1, -2)) / np.where(total > 0, total, 1.0), 0.0)
    score = score + flip_cost * states.sum(axis=1)[None]
    # Viterbi over the S combinations
    change = switch_cost * (states[:, None, :] != states[None, :, :]).sum(axis=-1)  # (S, S)
    best = score[0].copy()
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        total_cost = best[:, None] + change  # from i to j
        back[t] = total_cost.argmin(axis=0)
        best = total_cost[back[t], np.arange(S)] + score[t]
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(best.argmin())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return Labelling(flipped=states[path], cost=score[np.arange(T), path] - flip_cost * states[path].sum(axis=1),
                     cost_unflipped=score[:, 0])


def fundamental_matrix(Pa: np.ndarray, Pb: np.ndarray) -> np.ndarray:
    """(3, 3) F with ``xb^T F xa = 0`` for the images xa, xb (homogeneous pixels) of one world point."""
    _, _, vt = np.linalg.svd(Pa)
    centre = vt[-1]  # camera a's centre (homogeneous), P_a C = 0
    e = Pb @ centre
    ex = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
    return ex @ Pb @ np.linalg.pinv(Pa)


def epipolar_distance(F: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """(...,) symmetric point-to-epipolar-line distance in px (mean of both images) of xa, xb (..., 2)."""
    ha = np.concatenate([xa, np.ones(xa.shape[:-1] + (1,))], axis=-1)
    hb = np.concatenate([xb, np.ones(xb.shape[:-1] + (1,))], axis=-1)
    la = ha @ F.T   # lines in image b
    lb = hb @ F     # lines in image a
    num = np.abs((hb * la).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * num * (1.0 / np.linalg.norm(la[..., :2], axis=-1) + 1.0 / np.linalg.norm(lb[..., :2], axis=-1))
