"""pose2sim's ``Demo_MultiPerson`` as a fitkit development set: detections per view and a triangulated reference.

Inputs: one ``fitkit detect --max-people N`` observation file per view
(``blazepose33``, tracks ``<view>_p<k>``, frame numbers = the video's frame
index) and the calibration (:func:`fitkit.io.cameras.read_cameras`). Steps:

1. :func:`view_tracks`: each view's tracks on the common frame grid (F frames;
   the 4 videos are synchronised, frame f of every view is the same instant).
2. :func:`association_costs` / :func:`associate`: which track of each view is
   which person. The cost of a pair of tracks in two views is the median over
   their common frames of the median symmetric epipolar distance (px,
   undistorted) of their confident keypoints, the smaller of the plain and the
   left/right-swapped labelling (a swapped view must not break the
   association). Pairs are merged greedily from the cheapest (union-find), never
   putting two time-overlapping tracks of one view in one person. The
   participants are the ``num_people`` groups with the most detected
   (view, frame) pairs: the people seen by the most views for the longest
   (a bystander seen by one view or briefly is left out).
3. :func:`triangulate_person`: per participant, the views' keypoints are
   undistorted, each view's left/right labelling is chosen per frame
   (:func:`fitkit.geometry.triangulate.choose_labellings`, with hysteresis), and
   every point is triangulated by the confidence-weighted DLT with outlier-view
   rejection (:func:`fitkit.geometry.triangulate.triangulate_robust`).
   Reprojection errors are measured in the original (distorted) pixels with
   :func:`fitkit.io.cameras.project_points`.
4. A frame is ``clean`` when all 12 limb points (shoulders, elbows, wrists,
   hips, knees, ankles) are triangulated (>= 2 views each), from
   ``clean_min_views`` views on average, and their mean reprojection error is
   below ``clean_max_px``.

Thresholds are the fields of :class:`Settings` (written into the reference file
and ``PROVENANCE.md``).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from fitkit.body.keypoint_formats import get_format
from fitkit.geometry.triangulate import (
    choose_labellings,
    epipolar_distance,
    flip_labels,
    fundamental_matrix,
    projection_matrix,
    triangulate_robust,
)

logger = logging.getLogger(__name__)

VIEWS = ("cam01", "cam02", "cam03", "cam04")
KEYPOINT_NAMES = tuple(get_format("blazepose33").names)
LIMB_NAMES = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
              "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
LIMBS = np.array([KEYPOINT_NAMES.index(n) for n in LIMB_NAMES])


def mirror_permutation(names=KEYPOINT_NAMES) -> np.ndarray:
    """(K,) index of each keypoint's left/right mirror (itself for centre points), by name."""
    names = list(names)

    def mirror(n: str) -> str:
        if "left" in n:
            return n.replace("left", "right")
        if "right" in n:
            return n.replace("right", "left")
        return n
    return np.array([names.index(mirror(n)) for n in names])


MIRROR = mirror_permutation()


@dataclass
class Settings:
    """Thresholds of the reference (pixels are full-resolution image pixels).

    Attributes:
        min_confidence: keypoints with a lower visibility are not used.
        assoc_max_px: two tracks can be one person only if their epipolar cost is below this.
        min_overlap: ... and they share at least this many frames.
        num_people: participants kept.
        link_max_m: a person's torso centre moves at most this far (meters) between the frames it is seen in.
        outlier_px: a view farther than this from the other views' point is rejected.
        switch_cost, flip_cost, cap: the left/right labelling's hysteresis
            (see :func:`fitkit.geometry.triangulate.choose_labellings`).
        clean_min_views, clean_max_px: the per-frame ``clean`` flag: every limb point
            from >= 2 views, >= ``clean_min_views`` on average over the 12, and a
            mean limb reprojection error < ``clean_max_px``.
    """

    min_confidence: float = 0.3
    assoc_max_px: float = 25.0
    min_overlap: int = 5
    num_people: int = 2
    link_max_m: float = 0.5
    outlier_px: float = 40.0
    switch_cost: float = 20.0
    flip_cost: float = 0.5
    cap: float = 50.0
    clean_min_views: int = 3
    clean_max_px: float = 15.0


def view_tracks(obs, num_frames: int) -> dict[str, np.ndarray]:
    """Each track of one view's observations as (F, 33, 3) x, y, confidence (zeros where absent).

    ``obs`` is a :class:`fitkit.io.observations.Observations` with ``track_ids``
    and ``frame_numbers`` (the frame index in the video, 0..F-1).
    """
    if obs.track_ids is None or obs.frame_numbers is None:
        raise ValueError(f"{obs.source}: needs track_ids and frame_numbers (fitkit detect --max-people on a video)")
    kp = obs.keypoints.detach().cpu().numpy().astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for row, (track, f) in enumerate(zip(obs.track_ids, obs.frame_numbers)):
        if not 0 <= f < num_frames:
            raise ValueError(f"{obs.source}: frame_numbers[{row}] = {f} is outside 0..{num_frames - 1}")
        out.setdefault(track, np.zeros((num_frames, kp.shape[1], 3)))[f] = kp[row]
    return out


def _undistorted(kp: np.ndarray, calib) -> np.ndarray:
    from fitkit.io.cameras import undistort_points

    return np.asarray(undistort_points(kp, calib))


def _pair_cost(F: np.ndarray, a: np.ndarray, b: np.ndarray, min_confidence: float) -> float:
    """Median symmetric epipolar distance (px) of two undistorted (33, 3) detections' confident
    keypoints, the smaller of the plain and the left/right-swapped labelling of ``b``; inf if
    they share fewer than 6 keypoints."""
    best = np.inf
    for bb in (b, b[MIRROR]):
        m = (a[:, 2] >= min_confidence) & (bb[:, 2] >= min_confidence)
        if m.sum() >= 6:
            best = min(best, float(np.median(epipolar_distance(F, a[m, :2], bb[m, :2]))))
    return best


def _torso_centre(kp: np.ndarray, min_confidence: float) -> Optional[np.ndarray]:
    """(2,) mean of the confident shoulders and hips (the same whatever the left/right labels)."""
    idx = [KEYPOINT_NAMES.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    m = kp[idx, 2] >= min_confidence
    return kp[idx][m, :2].mean(axis=0) if m.any() else None


def associate(cameras: dict, tracks: dict[str, dict[str, np.ndarray]], settings: Settings) -> dict:
    """Which detection of each view is which participant, frame by frame.

    Per frame, the detections of different views are joined greedily from the
    cheapest pair (:func:`_pair_cost` below ``assoc_max_px``; never two of one
    view); each group seen by >= 2 views gets a 3D position (its torso centres
    triangulated). Groups of consecutive frames are linked into identities by
    that position (Hungarian, at most ``link_max_m`` apart, gaps up to 10 frames).
    The participants are the ``num_people`` identities with the most detected
    (view, frame) pairs.

    Returns:
        ``{"track_of": (P, F, V) str array of the track each participant's
        detection comes from ('' where none), "left_out": [(identity size,
        views), ...]}``.
    """
    from scipy.optimize import linear_sum_assignment

    views = list(tracks)
    V = len(views)
    num_frames = next(iter(next(iter(tracks.values())).values())).shape[0]
    P = {v: projection_matrix(cameras[v].K, cameras[v].R, cameras[v].t) for v in views}
    Pm = np.stack([P[v] for v in views])
    Fm = {(i, j): fundamental_matrix(P[views[i]], P[views[j]]) for i in range(V) for j in range(V) if i != j}
    und = {v: {k: _undistorted(a, cameras[v]) for k, a in tracks[v].items()} for v in views}

    identities: list[dict] = []  # {"frames": {f: {view index: track}}, "last": f, "pos": (3,)}
    live: list[int] = []
    for f in range(num_frames):
        dets = [(vi, t, und[v][t][f]) for vi, v in enumerate(views) for t in und[v] if (und[v][t][f, :, 2] > 0).any()]
        pairs = []
        for i in range(len(dets)):
            for j in range(i + 1, len(dets)):
                if dets[i][0] != dets[j][0]:
                    c = _pair_cost(Fm[dets[i][0], dets[j][0]], dets[i][2], dets[j][2], settings.min_confidence)
                    if c < settings.assoc_max_px:
                        pairs.append((c, i, j))
        group = list(range(len(dets)))
        members = {i: [i] for i in range(len(dets))}
        for _, i, j in sorted(pairs):
            gi, gj = group[i], group[j]
            if gi == gj or {dets[k][0] for k in members[gi]} & {dets[k][0] for k in members[gj]}:
                continue
            for k in members[gj]:
                group[k] = gi
            members[gi].extend(members.pop(gj))
        groups, positions = [], []
        for g in members.values():
            if len(g) < 2:
                continue
            x = np.zeros((V, 2))
            w = np.zeros(V)
            for k in g:
                c = _torso_centre(dets[k][2], settings.min_confidence)
                if c is not None:
                    x[dets[k][0]], w[dets[k][0]] = c, 1.0
            pos = triangulate_robust(Pm, x, w, max_error=settings.outlier_px).points3d
            if np.isfinite(pos).all():
                groups.append({dets[k][0]: dets[k][1] for k in g})
                positions.append(pos)
        live = [i for i in live if f - identities[i]["last"] <= 10]
        assigned = [-1] * len(groups)
        if groups and live:
            dist = np.linalg.norm(np.stack(positions)[:, None] - np.stack([identities[i]["pos"] for i in live])[None],
                                  axis=-1)
            for r, c in zip(*linear_sum_assignment(dist)):
                if dist[r, c] <= settings.link_max_m:
                    assigned[r] = live[c]
        for r, g in enumerate(groups):
            if assigned[r] < 0:
                identities.append({"frames": {}, "last": f, "pos": positions[r]})
                assigned[r] = len(identities) - 1
                live.append(assigned[r])
            ident = identities[assigned[r]]
            ident["frames"][f] = g
            ident["last"], ident["pos"] = f, positions[r]

    size = [sum(len(g) for g in ident["frames"].values()) for ident in identities]
    order = sorted(range(len(identities)), key=lambda i: -size[i])
    track_of = np.full((settings.num_people, num_frames, V), "", dtype=object)
    for p, i in enumerate(order[: settings.num_people]):
        for f, g in identities[i]["frames"].items():
            for vi, t in g.items():
                track_of[p, f, vi] = t
        logger.info("participant %d: identity %d, %d view-frames over %d frames", p, i, size[i],
                    len(identities[i]["frames"]))
    left_out = [(size[i], sorted({views[vi] for g in identities[i]["frames"].values() for vi in g}))
                for i in order[settings.num_people:]]
    for n, vs in left_out:
        logger.info("left out: an identity with %d view-frames in %s", n, vs)
    return {"track_of": track_of.astype(str), "left_out": left_out}


def gather(track_of: np.ndarray, tracks: dict[str, dict[str, np.ndarray]], views) -> np.ndarray:
    """(F, V, 33, 3) one participant's keypoints per view, from its (F, V) track names ('' = none)."""
    num_frames = track_of.shape[0]
    out = np.zeros((num_frames, len(views), len(KEYPOINT_NAMES), 3))
    for f in range(num_frames):
        for vi, v in enumerate(views):
            if track_of[f, vi]:
                out[f, vi] = tracks[v][track_of[f, vi]][f]
    return out


def main_tracks(track_of: np.ndarray) -> list[str]:
    """Per view, the track that gives a participant most of its detections ('' if none),
    from its (F, V) track names."""
    out = []
    for vi in range(track_of.shape[1]):
        names, counts = np.unique(track_of[:, vi][track_of[:, vi] != ""], return_counts=True)
        out.append(str(names[counts.argmax()]) if len(names) else "")
    return out


def triangulate_person(raw: np.ndarray, cameras: list, settings: Settings) -> dict:
    """The reference of one participant.

    Args:
        raw: (F, V, 33, 3) x, y (distorted pixels), confidence per view.
        cameras: V :class:`fitkit.io.cameras.CameraCalib`, in the views' order.
    Returns:
        dict of arrays: ``points3d`` (F, 33, 3) meters (world axes of the
        calibration, NaN where fewer than 2 views), ``used`` (F, 33, V) bool,
        ``view_errors`` (F, 33, V) px (NaN where the view has no point),
        ``num_views`` (F, 33), ``error`` (F, 33) mean px over the used views,
        ``flipped`` (F, V) bool (the view's left/right labels were swapped),
        ``clean`` (F,) bool, ``labelling_cost`` / ``unflipped_cost`` (F,) px.
    """
    from fitkit.io.cameras import project_points

    Fn, V, K, _ = raw.shape
    P = np.stack([projection_matrix(c.K, c.R, c.t) for c in cameras])
    und = np.stack([_undistorted(raw[:, v], cameras[v]) for v in range(V)], axis=1)  # (F, V, K, 3)
    weights = np.where(und[..., 2] >= settings.min_confidence, und[..., 2], 0.0)
    lab = choose_labellings(P, und[..., :2], weights, MIRROR, cap=settings.cap, switch_cost=settings.switch_cost,
                            flip_cost=settings.flip_cost)
    flip = lab.flipped[:, :, None, None]
    und_f = np.where(flip, flip_labels(und, MIRROR), und)
    raw_f = np.where(flip, flip_labels(raw, MIRROR), raw)
    w_f = np.where(und_f[..., 2] >= settings.min_confidence, und_f[..., 2], 0.0)
    tri = triangulate_robust(P, np.moveaxis(und_f[..., :2], 1, 2), np.moveaxis(w_f, 1, 2),
                             max_error=settings.outlier_px)
    X = tri.points3d  # (F, K, 3)
    errors = np.stack([np.linalg.norm(project_points(X, cameras[v]) - raw_f[:, v, :, :2], axis=-1)
                       for v in range(V)], axis=-1)  # (F, K, V) distorted pixels
    has = np.moveaxis(w_f, 1, 2) > 0
    errors = np.where(has & np.isfinite(X).all(axis=-1, keepdims=True), errors, np.nan)
    used = tri.used
    n_used = used.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        mean_err = np.where(n_used > 0, np.where(used, errors, 0.0).sum(axis=-1) / np.maximum(n_used, 1), np.nan)
    limb_views = n_used[:, LIMBS]
    limb_ok = np.isfinite(X[:, LIMBS]).all(axis=(-1, -2)) & (limb_views >= 2).all(axis=1)
    limb_err = np.where(limb_ok[:, None], mean_err[:, LIMBS], 0.0).mean(axis=1)
    clean = limb_ok & (limb_views.mean(axis=1) >= settings.clean_min_views) & (limb_err < settings.clean_max_px)
    return dict(points3d=X, used=used, view_errors=errors, num_views=n_used, error=mean_err,
                flipped=lab.flipped, clean=clean, labelling_cost=lab.cost, unflipped_cost=lab.cost_unflipped)


def flip_spans(flipped: np.ndarray) -> list[tuple[int, int]]:
    """``[(first, last), ...]`` inclusive frame ranges where ``flipped`` (F,) is True."""
    spans, start = [], None
    for f, on in enumerate(list(flipped) + [False]):
        if on and start is None:
            start = f
        elif not on and start is not None:
            spans.append((start, f - 1))
            start = None
    return spans


def build_reference(observations: dict, cameras: dict, num_frames: int,
                    settings: Optional[Settings] = None) -> dict:
    """Everything of the reference from the per-view observations (``{view: Observations}``).

    Returns a dict: ``views``, ``track_of`` ((P, F, V) track names, see
    :func:`associate`), ``left_out``, ``results`` (per participant the dict of
    :func:`triangulate_person`), ``raw`` (per participant (F, V, 33, 3)), ``settings``.
    """
    settings = settings or Settings()
    views = [v for v in VIEWS if v in observations] or sorted(observations)
    tracks = {v: view_tracks(observations[v], num_frames) for v in views}
    assoc = associate(cameras, tracks, settings)
    results, raws = [], []
    for track_of in assoc["track_of"]:
        raw = gather(track_of, tracks, views)
        raws.append(raw)
        results.append(triangulate_person(raw, [cameras[v] for v in views], settings))
    return dict(views=views, track_of=assoc["track_of"], left_out=assoc["left_out"], results=results, raw=raws,
                settings=settings)


def reference_arrays(ref: dict) -> dict:
    """The arrays of ``reference.npz`` (see ``docs/devset.md``)."""
    res = ref["results"]
    views = ref["views"]
    P = len(res)
    tracks = np.array([main_tracks(t) for t in ref["track_of"]], dtype=str)
    view_err = np.stack([r["view_errors"] for r in res])       # (P, F, K, V)
    used = np.stack([r["used"] for r in res])
    per_view_mean = np.array([np.nanmean(np.where(used[..., v], view_err[..., v], np.nan)) for v in range(len(views))])
    per_view_median = np.array([np.nanmedian(np.where(used[..., v], view_err[..., v], np.nan))
                                for v in range(len(views))])
    out = dict(
        format=np.array("fitkit.devset.reference/1"),
        participants=np.array([f"P{i}" for i in range(P)]),
        views=np.array(views),
        keypoint_names=np.array(KEYPOINT_NAMES),
        limb_names=np.array(LIMB_NAMES),
        tracks=tracks,
        track_of=np.asarray(ref["track_of"], dtype=str),
        frame_numbers=np.arange(res[0]["points3d"].shape[0]) if P else np.zeros(0, int),
        points3d=np.stack([r["points3d"] for r in res]).astype(np.float32),
        num_views=np.stack([r["num_views"] for r in res]).astype(np.int8),
        error=np.stack([r["error"] for r in res]).astype(np.float32),
        view_errors=view_err.astype(np.float32),
        view_used=used,
        flipped=np.stack([r["flipped"] for r in res]),
        clean=np.stack([r["clean"] for r in res]),
        view_mean_error=per_view_mean.astype(np.float32),
        view_median_error=per_view_median.astype(np.float32),
    )
    for key, value in asdict(ref["settings"]).items():
        out[f"setting_{key}"] = np.array(value)
    return out
