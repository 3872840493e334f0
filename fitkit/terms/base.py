"""The one interface shared by data terms and priors, and their registry.

A term turns the current body (its parameters and whichever model outputs it
declared it needs) into *residuals per sample*, shape (B, R). The engine
multiplies them by ``sqrt(weight)`` (the stage's weight for that term) and
every solver minimises the per-sample energy::

    E_b = sum over terms t of  weight_t * sum_r residual_t[b, r] ** 2

so a recipe weight scales an energy, exactly like the squared weights of
SMPLify/SPIN (SPIN's ``pose_prior_weight = 4.78`` is a recipe weight of
4.78**2 = 22.85).

Writing a term (one file, no engine edit)::

    from fitkit.terms.base import Term, Needs, register_term

    @register_term("my_term")
    class MyTerm(Term):
        def __init__(self, scale=1.0):
            self.scale = scale
        def needs(self):
            return Needs(joints=True)
        def residuals(self, batch):
            return self.scale * batch.joints[..., 1]          # (B, 24)

and name it in a recipe (``type: my_term``). A module outside the package is
imported by listing it under the recipe's ``plugins:``.

Two optional extensions, both used by learned pose priors:

- *Energy terms.* A term whose energy is not a sum of squares (e.g. a
  negative log-density, which can be negative) sets ``least_squares = False``
  and implements :meth:`Term.energy` instead of ``residuals``. Adam and
  L-BFGS minimise it; Levenberg–Marquardt refuses such a stage.
- *Latent pose.* A prior that reparameterizes ``body_pose`` by a latent code
  (VPoser's z, a flow's base sample) returns a :class:`PoseLatent` from
  :meth:`Term.latent`. In a stage that frees ``body_pose`` and uses that term,
  the solver then optimizes the latent instead of the axis-angle pose; terms
  see the decoded pose in ``batch.params['body_pose']`` and the code itself in
  ``batch.params['pose_latent']``.

*Temporal terms.* A term that reads several frames at once (smoothness,
optical flow) sets ``temporal = True``. It runs only in the sequence stages
of a recipe with a ``sequence:`` section (:mod:`fitkit.fitting.sequence`):
there a solver's sample is a *chunk* of C consecutive frames of one track,
padded to T slots; every term's batch holds the C*T frames of its chunks
(row-major: chunk, then slot) and ``batch.sequence`` (a
:class:`SequenceGrid`) says which slot holds which frame. Per-frame terms
return (C*T, R) as always; a temporal term returns (C, R) residuals (or a
(C,) energy) per chunk and must ignore padded slots and pairs that are not
consecutive (``batch.sequence.valid`` / ``pairs``).

Rules for ``residuals`` (the Levenberg–Marquardt solver differentiates it in
forward mode with :mod:`torch.func`): use only torch operations on the batch's
tensors, no in-place updates of inputs, no ``.item()`` and no Python branching
on tensor values. Per-sample data prepared in :meth:`Term.setup` (full batch
of N samples) is picked for the active rows with ``batch.rows(tensor)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch

__all__ = ["Needs", "SetupContext", "Batch", "SequenceGrid", "Term", "PoseLatent", "register_term", "get_term_class",
           "registered_terms", "LATENT_KEY"]

#: Key of the pose latent in :attr:`Batch.params` while a stage optimizes one.
LATENT_KEY = "pose_latent"


@dataclass(frozen=True)
class Needs:
    """Model outputs a term reads.

    Attributes:
        keypoints: keypoint set name (``'body25'``, ``'coco25'``, ``'blazepose33'``
            or an alias), or None.
        joints: whether the (B, J, 3) posed skeleton joints are read.
        vertices: None, ``'all'`` or a tuple of mesh vertex indices.
        params: the smplx parameters :meth:`Term.residuals` reads *directly*
            from ``batch.params`` (e.g. ``('body_pose',)`` for a pose prior), or
            None for "any". Optional; declaring it lets the Levenberg–Marquardt
            solver differentiate the term along those parameters only.
    """

    keypoints: str | None = None
    joints: bool = False
    vertices: str | tuple[int, ...] | None = None
    params: tuple[str, ...] | None = None

    @property
    def uses_points(self) -> bool:
        return self.keypoints is not None or self.joints or self.vertices is not None


@dataclass
class SetupContext:
    """Everything a term may look at once, before a stage runs (all N samples).

    Attributes:
        observations: the sequence's :class:`fitkit.io.observations.Observations`
            (tensors already on ``device``).
        model: the :class:`fitkit.body.BodyModel` being fitted.
        camera: the :class:`fitkit.fitting.camera_setup.FitCamera` of the fit.
        init: smplx-named initial parameters, each (N, ...), on ``device``.
        device, dtype: where and in what precision the fit runs.
    """

    observations: Any
    model: Any
    camera: Any
    init: Mapping[str, torch.Tensor]
    device: torch.device
    dtype: torch.dtype


@dataclass
class SequenceGrid:
    """How the frames of a sequence stage's batch are laid out: C chunks of T slots.

    Attributes:
        frames: (C, T) long, the row (of the fit's N frames) in each slot. A
            padded slot (a chunk shorter than T) repeats its chunk's last frame.
        valid: (C, T) bool, True where the slot holds a frame of the chunk.
        pairs: (C, T-1) bool, True where slots t and t+1 are both valid, i.e.
            two consecutive frames of one track (tracks are split at gaps in
            their frame numbers before chunking, so neighbours are consecutive).
    """

    frames: torch.Tensor
    valid: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.frames.shape[0]), int(self.frames.shape[1])

    @property
    def pairs(self) -> torch.Tensor:
        return self.valid[:, :-1] & self.valid[:, 1:]

    def grid(self, per_frame: torch.Tensor) -> torch.Tensor:
        """(C*T, ...) per-frame values of the batch -> (C, T, ...)."""
        C, T = self.shape
        return per_frame.reshape(C, T, *per_frame.shape[1:])


@dataclass
class Batch:
    """What :meth:`Term.residuals` sees: the B active samples of one evaluation.

    Attributes:
        index: (B,) long rows of the full batch these samples are.
        params: smplx-named current parameters: ``global_orient`` (B, 3),
            ``body_pose`` (B, 69), ``betas`` (B, k), ``transl`` (B, 3) (camera
            frame, meters).
        init: the same names, initial values (B, ...).
        K: (B, 3, 3) intrinsics in full-image pixels.
        pixel_scale: (B,) factor that turns full-image pixels into the units the
            recipe's pixel quantities (sigma) are expressed in (1 in full-image
            mode; crop size / box size in crop mode).
        keypoints, joints, vertices: (B, P, 3) posed model points in camera
            coordinates (meters), for the outputs declared in :class:`Needs`.
        sequence: in a sequence stage, the layout of the B = C*T frames in
            chunks (:class:`SequenceGrid`); None in a per-frame stage.
    """

    index: torch.Tensor
    params: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    K: torch.Tensor
    pixel_scale: torch.Tensor
    keypoints: torch.Tensor | None = None
    joints: torch.Tensor | None = None
    vertices: torch.Tensor | None = None
    sequence: SequenceGrid | None = None

    def rows(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Select this batch's rows of an (N, ...) per-sample tensor."""
        return per_sample.index_select(0, self.index)


class PoseLatent:
    """A learned reparameterization ``body_pose = decode(z)`` (see the module docstring).

    Subclasses set :attr:`dim` and implement both maps for any rows ``index``
    of the fit's N samples (a conditional decoder selects its per-sample
    context with them). ``decode`` must be differentiable in ``z``.

    Attributes:
        dim: width Dz of the latent code.
    """

    dim: int = 0

    def encode(self, body_pose: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, 69) axis-angle body pose of rows ``index`` (B,) -> (B, Dz) latent code."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, Dz) latent code of rows ``index`` -> (B, 69) axis-angle body pose."""
        raise NotImplementedError


class Term:
    """Base class of data terms and priors (see the module docstring).

    Class attributes:
        kind: ``'data'`` or ``'prior'``. Samples for which no data term has
            evidence are flagged ``no_evidence`` and passed through unchanged.
        pointwise: name of the output (``'keypoints'``, ``'joints'`` or
            ``'vertices'``) when every residual row depends on one point of that
            output only (and on no other output); :meth:`residual_points` then
            says which. Lets the LM solver differentiate the term with 3
            forward-mode passes instead of one per parameter. Leave None if unsure.
        least_squares: False for a term that implements :meth:`energy` only
            (not usable with Levenberg–Marquardt).
        temporal: True for a term that couples the frames of a chunk (see the
            module docstring); it returns one row per chunk, not per frame.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "data"
    pointwise: ClassVar[str | None] = None
    least_squares: ClassVar[bool] = True
    temporal: ClassVar[bool] = False

    def needs(self) -> Needs:
        """The model outputs :meth:`residuals` reads (default: none)."""
        return Needs()

    def setup(self, ctx: SetupContext) -> None:
        """Validate and prepare per-sample data for all N samples (once per fit)."""

    def evidence(self) -> torch.Tensor | None:
        """(N,) bool: samples with usable observations for this term, or None
        when the term needs no observations (priors)."""
        return None

    def residuals(self, batch: Batch) -> torch.Tensor:
        """(B, R) unweighted residuals ((C, R) for a temporal term); the energy is
        their sum of squares."""
        raise NotImplementedError

    def energy(self, batch: Batch) -> torch.Tensor:
        """(B,) unweighted energy; by default the sum of squared residuals.
        Terms with ``least_squares = False`` override this instead of :meth:`residuals`."""
        r = self.residuals(batch)
        return (r * r).sum(dim=1)

    def latent(self) -> PoseLatent | None:
        """The pose reparameterization this term optimizes through, or None (the default)."""
        return None

    def residual_points(self) -> torch.Tensor:
        """(R,) long: the point of output ``pointwise`` each residual row depends on."""
        raise NotImplementedError(f"{type(self).__name__} declares no pointwise structure")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[str, type[Term]] = {}


def register_term(name: str) -> Callable[[type[Term]], type[Term]]:
    """Class decorator: make a :class:`Term` subclass available to recipes as ``type: name``."""

    def deco(cls: type[Term]) -> type[Term]:
        if not (isinstance(cls, type) and issubclass(cls, Term)):
            raise TypeError(f"register_term({name!r}): {cls!r} is not a Term subclass")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"term name {name!r} is already registered by "
                             f"{old.__module__}.{old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    import fitkit.priors  # noqa: F401  (registers the built-in priors)
    import fitkit.terms  # noqa: F401  (registers the built-in data terms)


def get_term_class(name: str) -> type[Term]:
    """The class registered under ``name``; ValueError listing the known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown term type {name!r}; registered: {sorted(_REGISTRY)} "
                         "(list the module defining it under the recipe's 'plugins:')") from None


def registered_terms() -> dict[str, type[Term]]:
    """Name -> class of every registered term and prior."""
    _load_builtins()
    return dict(_REGISTRY)
