"""Sequence stages: tracks, segments, overlapping chunks, one shape per track.

A recipe stage with ``sequence: true`` fits frames *together* instead of one
by one. How the N frames of the observations are organised:

1. **Tracks.** ``Observations.track_ids`` says which person each frame shows
   (None: one track). Every track gets one shape: entering the first sequence
   stage, each frame's ``betas`` become their track's mean (over frames with
   evidence), and from then on one vector per track is optimized and written
   to all its frames -- constant by construction.
2. **Segments.** Within a track, frames are ordered by
   ``Observations.frame_numbers``; a gap (a missing number) splits the track
   into segments. Temporal terms never couple frames across a gap.
3. **Chunks.** A segment longer than ``chunk`` frames is cut into chunks of
   ``chunk`` frames overlapping by at least ``overlap`` frames (the fewest
   such chunks, spread evenly over the segment). A solver's *sample*
   in a sequence stage is one chunk: its packed vector holds the shared
   ``betas`` (when free) and the free per-frame parameters of every slot.
   Chunks shorter than the longest are padded; padded slots contribute nothing.
4. **Stitching.** After a stage, every frame's parameters are the weighted
   mean of the chunks that hold it: weights ramp linearly across an overlap
   (1 inside a chunk, down to 1/(overlap+1) at its overlapped ends), rotations
   are averaged as sign-aligned quaternions and renormalised, translations
   linearly. Frames seen by one chunk take its values exactly (rotations
   included, as the same axis-angle vectors).
5. **Shape consensus.** When a sequence stage frees ``betas``, each chunk
   optimizes its own copy; a track's shape is then the frame-count weighted
   mean of its chunks' copies, and the chunks of tracks that span more than
   one chunk run the stage once more with that shape fixed, so that poses and
   shape agree (tracks within one chunk need no second pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import roma
import torch

from fitkit.fitting.objective import Objective
from fitkit.fitting.params import PARAM_NAMES, ROTATION_PARAMS, ParamLayout
from fitkit.terms.base import LATENT_KEY, Batch, SequenceGrid

__all__ = ["Segment", "ChunkPlan", "split_segments", "plan_chunks", "SequenceLayout", "SequenceObjective",
           "stitch", "track_mean_betas", "DEFAULT_CHUNK", "DEFAULT_OVERLAP"]

DEFAULT_CHUNK = 64
DEFAULT_OVERLAP = 8


@dataclass(frozen=True)
class Segment:
    """Consecutive frames of one track: ``rows`` (frame rows of the observations) in time order."""

    track: str
    rows: tuple[int, ...]


def split_segments(observations) -> list[Segment]:
    """The observations' tracks, each ordered by frame number and split at gaps."""
    tracks = observations.track_ids or [""] * len(observations)
    times = observations.time_indices()
    by_track: dict[str, list[int]] = {}
    for row, t in enumerate(tracks):
        by_track.setdefault(t, []).append(row)
    segments = []
    for track, rows in by_track.items():
        rows = sorted(rows, key=lambda r: times[r])
        current = [rows[0]]
        for prev, row in zip(rows[:-1], rows[1:]):
            if times[row] != times[prev] + 1:
                segments.append(Segment(track, tuple(current)))
                current = []
            current.append(row)
        segments.append(Segment(track, tuple(current)))
    return segments


@dataclass
class ChunkPlan:
    """C chunks of at most T slots over the N frames.

    Attributes:
        frames: (C, T) long frame row of each slot (padding repeats the chunk's last frame).
        valid: (C, T) bool, slot holds a frame.
        weight: (C, T) stitching weight of each slot (0 on padding); the weights
            of the slots holding one frame sum to 1.
        track: (C,) long track number of each chunk (index into :attr:`tracks`).
        tracks: the track names.
        segments: the segments the chunks were cut from.
        num_frames: N.
    """

    frames: torch.Tensor
    valid: torch.Tensor
    weight: torch.Tensor
    track: torch.Tensor
    tracks: list[str]
    segments: list[Segment]
    num_frames: int

    @property
    def num_chunks(self) -> int:
        return int(self.frames.shape[0])

    def to(self, device) -> "ChunkPlan":
        return ChunkPlan(self.frames.to(device), self.valid.to(device), self.weight.to(device),
                         self.track.to(device), self.tracks, self.segments, self.num_frames)

    def grid(self, index: torch.Tensor | None = None) -> SequenceGrid:
        if index is None:
            return SequenceGrid(self.frames, self.valid)
        return SequenceGrid(self.frames.index_select(0, index), self.valid.index_select(0, index))

    def multi_chunk_tracks(self) -> torch.Tensor:
        """(C,) bool: the chunk's track is split over more than one chunk."""
        counts = torch.bincount(self.track, minlength=len(self.tracks))
        return counts.index_select(0, self.track) > 1

    def frame_chunk_any(self, per_chunk: torch.Tensor) -> torch.Tensor:
        """(N,) bool: some chunk holding the frame has ``per_chunk`` (C,) set."""
        hit = per_chunk[:, None].expand_as(self.valid) & self.valid
        out = torch.zeros(self.num_frames, dtype=torch.bool, device=self.frames.device)
        return out.index_put((self.frames[self.valid],), hit[self.valid], accumulate=True)

    def frame_chunk_all(self, per_chunk: torch.Tensor) -> torch.Tensor:
        """(N,) bool: every chunk holding the frame has ``per_chunk`` (C,) set."""
        return ~self.frame_chunk_any(~per_chunk)

    def frame_chunk_max(self, per_chunk: torch.Tensor) -> torch.Tensor:
        """(N,) the largest ``per_chunk`` (C,) value among the chunks holding the frame."""
        vals = per_chunk[:, None].expand_as(self.valid)[self.valid]
        out = torch.zeros(self.num_frames, dtype=per_chunk.dtype, device=per_chunk.device)
        return out.scatter_reduce(0, self.frames[self.valid], vals, reduce="amax", include_self=True)


def _starts(length: int, chunk: int, overlap: int) -> list[int]:
    """First frames of the fewest chunks of ``chunk`` frames that cover ``length`` frames
    with neighbours sharing at least ``overlap`` frames, spread evenly."""
    if length <= chunk:
        return [0]
    n = -(-(length - overlap) // (chunk - overlap))  # ceil
    return [round(i * (length - chunk) / (n - 1)) for i in range(n)]


def _slot_weights(n: int, overlap_prev: int, overlap_next: int) -> list[float]:
    """Stitching weights of a chunk of n frames: linear ramps over the frames it shares
    with the previous and the next chunk of its segment, 1 elsewhere."""
    w = []
    for t in range(n):
        a = min(1.0, (t + 1) / (overlap_prev + 1))
        b = min(1.0, (n - t) / (overlap_next + 1))
        w.append(min(a, b))
    return w


def plan_chunks(observations, chunk: int = DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP, *,
                device=None) -> ChunkPlan:
    """Cut the observations' segments into overlapping chunks (module docstring, step 3).

    Args:
        chunk: frames per chunk (>= 2).
        overlap: frames shared by neighbouring chunks (0 <= overlap < chunk).
    """
    if not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"sequence.chunk must be an integer >= 2, got {chunk!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < chunk:
        raise ValueError(f"sequence.overlap must be an integer in [0, chunk={chunk}), got {overlap!r}")
    segments = split_segments(observations)
    tracks = list(dict.fromkeys(s.track for s in segments))
    rows, weights, track_of = [], [], []
    for seg in segments:
        starts = _starts(len(seg.rows), chunk, overlap)
        for i, s in enumerate(starts):
            part = seg.rows[s:s + chunk]
            ov_prev = starts[i - 1] + chunk - s if i > 0 else 0
            ov_next = s + chunk - starts[i + 1] if i + 1 < len(starts) else 0
            rows.append(list(part))
            weights.append(_slot_weights(len(part), ov_prev, ov_next))
            track_of.append(tracks.index(seg.track))
    T = max(len(r) for r in rows)
    C = len(rows)
    frames = torch.zeros(C, T, dtype=torch.long)
    valid = torch.zeros(C, T, dtype=torch.bool)
    weight = torch.zeros(C, T, dtype=torch.float64)
    for c, (r, w) in enumerate(zip(rows, weights)):
        frames[c, :len(r)] = torch.tensor(r)
        frames[c, len(r):] = r[-1]
        valid[c, :len(r)] = True
        weight[c, :len(r)] = torch.tensor(w, dtype=torch.float64)
    total = torch.zeros(len(observations), dtype=torch.float64).index_add_(0, frames[valid], weight[valid])
    weight = torch.where(valid, weight / total[frames].clamp(min=1e-12), torch.zeros_like(weight))
    plan = ChunkPlan(frames, valid, weight, torch.tensor(track_of, dtype=torch.long), tracks, segments,
                     len(observations))
    return plan if device is None else plan.to(device)


def track_mean_betas(betas: torch.Tensor, plan: ChunkPlan, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) every frame's ``betas`` replaced by the mean over its track's frames
    (those in ``mask`` (N,) bool when given and any exist, else all of them)."""
    track_of_frame = torch.zeros(plan.num_frames, dtype=torch.long, device=betas.device)
    track_of_frame[plan.frames[plan.valid]] = plan.track[:, None].expand_as(plan.frames)[plan.valid]
    w = torch.ones(plan.num_frames, dtype=betas.dtype, device=betas.device)
    if mask is not None:
        has = torch.zeros(len(plan.tracks), dtype=torch.bool, device=betas.device)
        has.index_put_((track_of_frame[mask],), torch.ones_like(track_of_frame[mask], dtype=torch.bool))
        w = torch.where(mask | ~has[track_of_frame], w, torch.zeros_like(w))
    sums = torch.zeros(len(plan.tracks), betas.shape[1], dtype=betas.dtype, device=betas.device)
    sums.index_add_(0, track_of_frame, betas * w[:, None])
    count = torch.zeros(len(plan.tracks), dtype=betas.dtype, device=betas.device).index_add_(0, track_of_frame, w)
    return (sums / count.clamp(min=1e-12)[:, None]).index_select(0, track_of_frame)


def stitch(chunk_params: Mapping[str, torch.Tensor], plan: ChunkPlan) -> dict[str, torch.Tensor]:
    """Per-slot parameters (C*T, ...) -> per-frame (N, ...) (module docstring, step 4).

    Rotations (``global_orient``, ``body_pose``) are blended as quaternions
    aligned to the sign of the slot with the largest weight; everything else linearly.
    """
    C, T = plan.frames.shape
    flat_frames = plan.frames.reshape(-1)
    w = plan.weight.reshape(-1)
    out = {}
    for name, value in chunk_params.items():
        wv = w.to(value.dtype)
        if name in ROTATION_PARAMS:
            q = roma.rotvec_to_unitquat(value.reshape(C * T, -1, 3))  # (CT, J, 4)
            # the reference slot of each frame: its largest weight
            best = torch.zeros(plan.num_frames, dtype=w.dtype, device=w.device).scatter_reduce(
                0, flat_frames, w, reduce="amax", include_self=True)
            is_ref = (w == best[flat_frames]) & (w > 0)
            ref = torch.zeros(plan.num_frames, *q.shape[1:], dtype=q.dtype, device=q.device)
            ref[flat_frames[is_ref]] = q[is_ref]
            sign = torch.sign((q * ref[flat_frames]).sum(-1, keepdim=True))
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            acc = torch.zeros_like(ref).index_add_(0, flat_frames, q * sign * wv[:, None, None])
            acc = acc / acc.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            blended = roma.unitquat_to_rotvec(acc).reshape(plan.num_frames, -1)
            # a frame held by one slot keeps that slot's axis-angle exactly (not its canonical form)
            ref_value = torch.zeros_like(blended)
            ref_value[flat_frames[is_ref]] = value[is_ref]
            out[name] = torch.where((best >= 1 - 1e-9)[:, None], ref_value, blended)
        else:
            acc = torch.zeros(plan.num_frames, *value.shape[1:], dtype=value.dtype, device=value.device)
            out[name] = acc.index_add_(0, flat_frames, value * wv.view(-1, *([1] * (value.dim() - 1))))
    return out


class SequenceLayout:
    """Packing of a sequence stage's free parameters per chunk: x (C, D).

    ``x[c] = [betas (K, when free; shared by the chunk's frames), slot 0's free
    per-frame parameters, slot 1's, ...]``, each slot packed by an ordinary
    :class:`ParamLayout` (same rotation form and pose latent).
    """

    def __init__(self, free: Sequence[str], widths: Mapping[str, int], rotation: str, latent, plan: ChunkPlan):
        ParamLayout(free, widths, rotation)  # validates names and rotation
        self.plan = plan
        self.free = tuple(n for n in PARAM_NAMES if n in free)
        self.shared = widths["betas"] if "betas" in self.free else 0
        frame_free = [n for n in self.free if n != "betas"]
        self.frame = ParamLayout(frame_free, widths, rotation, latent) if frame_free else None
        self.latent = self.frame.latent if self.frame is not None else None
        self.T = int(plan.frames.shape[1])
        self.dim = self.shared + (self.frame.dim * self.T if self.frame is not None else 0)

    def frame_index(self, index: torch.Tensor) -> torch.Tensor:
        """(B*T,) frame rows of the slots of chunks ``index`` (B,)."""
        return self.plan.frames.index_select(0, index).reshape(-1)

    def encode(self, params: Mapping[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame (N, ...) parameters -> (B, D) for chunks ``index`` (default all).
        The shared ``betas`` are read from each chunk's first frame."""
        if index is None:
            index = torch.arange(self.plan.num_chunks, device=self.plan.frames.device)
        B = index.shape[0]
        parts = []
        if self.shared:
            first = self.plan.frames.index_select(0, index)[:, 0]
            parts.append(params["betas"].index_select(0, first))
        if self.frame is not None:
            fi = self.frame_index(index)
            rows = {k: v.index_select(0, fi) for k, v in params.items()}
            parts.append(self.frame.encode(rows, fi).reshape(B, -1))
        return torch.cat(parts, dim=1)

    def decode(self, x: torch.Tensor, fixed: Mapping[str, torch.Tensor], index: torch.Tensor) -> dict:
        """(B, D) ``x`` of chunks ``index`` -> per-slot parameters (B*T, ...); non-free ones
        from ``fixed`` (B*T, ...) (already gathered per slot)."""
        B = x.shape[0]
        fi = self.frame_index(index)
        if self.frame is not None:
            out = self.frame.decode(x[:, self.shared:].reshape(B * self.T, -1), fixed, fi)
        else:
            out = dict(fixed)
        if self.shared:
            out["betas"] = x[:, :self.shared].repeat_interleave(self.T, dim=0)
        return out

    def to_frames(self, x: torch.Tensor, fixed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(C, D) ``x`` of all chunks -> stitched per-frame (N, ...) parameters
        (``fixed``: the per-frame values of non-free ones)."""
        index = torch.arange(self.plan.num_chunks, device=x.device)
        fi = self.frame_index(index)
        slots = self.decode(x, {k: v.index_select(0, fi) for k, v in fixed.items()}, index)
        latent = slots.pop(LATENT_KEY, None)
        out = stitch({k: slots[k] for k in PARAM_NAMES}, self.plan)
        if latent is not None:  # the code of a frame's most trusted slot
            out[LATENT_KEY] = _pick_best_slot(latent, self.plan)
        return out

    def __repr__(self) -> str:
        return f"SequenceLayout(free={list(self.free)}, chunks={self.plan.num_chunks}x{self.T}, D={self.dim})"


def _pick_best_slot(values: torch.Tensor, plan: ChunkPlan) -> torch.Tensor:
    w = plan.weight.reshape(-1)
    flat = plan.frames.reshape(-1)
    order = torch.argsort(w)  # ascending: the largest weight is written last and wins
    out = torch.zeros(plan.num_frames, *values.shape[1:], dtype=values.dtype, device=values.device)
    out[flat[order]] = values[order]
    return out


class SequenceObjective(Objective):
    """A sequence stage's objective: samples are chunks (see the module docstring).

    Per-frame terms are evaluated on all C*T slots and their (C*T, R) residuals
    are zeroed on padded slots and regrouped as (C, T*R); temporal terms return
    (C, R) per chunk. Levenberg–Marquardt is not available (the packed vector
    of a chunk is long and its Jacobian dense).
    """

    def __init__(self, model, terms, layout: SequenceLayout, fixed, init, camera):
        super().__init__(model, terms, layout, fixed, init, camera)
        self.plan = layout.plan

    @property
    def num_samples(self) -> int:
        return self.plan.num_chunks

    def params(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        fi = self.layout.frame_index(index)
        fixed = {k: v.index_select(0, fi) for k, v in self.fixed.items()}
        return self.layout.decode(x, fixed, index)

    def _batches(self, x: torch.Tensor, index: torch.Tensor) -> list[Batch]:
        params = self.params(x, index)
        points = self._points(params)
        fi = self.layout.frame_index(index)
        shared = self._shared_rows(fi)
        grid = self.plan.grid(index)
        batches = []
        for i in range(len(self.terms)):
            b = Batch(index=fi, params=params, sequence=grid, **shared)
            if points is not None:
                self._attach_points(b, points, i)
            batches.append(b)
        return batches

    @staticmethod
    def _chunk_residuals(term, r: torch.Tensor, grid: SequenceGrid) -> torch.Tensor:
        """A term's residuals as one row per chunk: a per-frame term's (C*T, R), zeroed on
        padded slots, become (C, T*R); a temporal term's (C, R) pass through."""
        if term.temporal:
            return r
        C, T = grid.shape
        return (r * grid.valid.reshape(-1, 1).to(r.dtype)).reshape(C, -1)

    def term_residuals(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        if not self.least_squares:
            raise ValueError(f"terms {self.energy_only_terms()} define an energy, not residuals")
        out = []
        for b, wt, s in zip(self._batches(x, index), self.terms, self._sqrt_w):
            out.append(s * self._chunk_residuals(wt.term, wt.term.residuals(b), b.sequence))
        return out

    def _slot_energies(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        """Per term: (C*T,) weighted energies of per-frame terms (0 on padding) or (C,) of temporal ones."""
        out = []
        for b, wt in zip(self._batches(x, index), self.terms):
            if wt.term.least_squares:
                r = wt.term.residuals(b)
                e = (r * r).sum(dim=1)
            else:
                e = wt.term.energy(b)
            if not wt.term.temporal:
                e = e * b.sequence.valid.reshape(-1).to(e.dtype)
            out.append(wt.weight * e)
        return out

    def _term_energies(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for wt, e in zip(self.terms, self._slot_energies(x, index)):
            out.append(e if wt.term.temporal else e.reshape(index.shape[0], -1).sum(dim=1))
        return out

    def frame_energies(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Recipe key -> (N,) weighted energy per frame at chunk parameters ``x`` (C, D):
        per-frame terms are blended over the slots holding a frame with the stitching
        weights; a temporal term's chunk energy is spread evenly over the chunk's frames."""
        index = torch.arange(self.plan.num_chunks, device=x.device)
        w = self.plan.weight.reshape(-1)
        flat = self.plan.frames.reshape(-1)
        n_valid = self.plan.valid.sum(dim=1).clamp(min=1)
        out = {}
        with torch.no_grad():
            for wt, e in zip(self.terms, self._slot_energies(x, index)):
                if wt.term.temporal:
                    e = (e / n_valid)[:, None].expand_as(self.plan.weight).reshape(-1)
                acc = torch.zeros(self.plan.num_frames, dtype=e.dtype, device=e.device)
                out[wt.key] = acc.index_add_(0, flat, e * w.to(e.dtype))
        return out

    def residuals_and_jacobian(self, x, index):
        raise ValueError("sequence stages have no analytic Jacobian; use the adam or lbfgs solver")
