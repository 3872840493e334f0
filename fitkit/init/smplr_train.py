"""Training and evaluation of SMPLR on synthetic open-body data.

Every batch is drawn fresh (nothing is stored): poses from the open pose
data (half) and from :func:`~fitkit.eval.synthetic.sample_body_poses` (half),
a global orientation facing the camera turned by a random yaw (up to 0.6
rad; any yaw for a fraction ``any_yaw``, half of the training samples), betas ~ N(0, 0.9^2) pushed +-0.4 along the open
body's gender direction (the sign is the gender label), and the keypoints of
every input set the DAEs read. ``split='train'`` uses the pose data's
training clips and even seeds; ``'test'`` its held-out clips and odd seeds.

Noise (:func:`corrupt`, the "structured error" of seed 003 Sec. 4.4.2):
per-sample isotropic Gaussian (sigma up to 4 cm), extra depth error on half
of the samples (sigma up to 8 cm: monocular depth is the uncertain axis), one
random limb displaced as a whole (30% of samples), 0-15% of the points
missing, for ``jl42`` inputs all 18 landmarks missing in 30% of samples
(joints only), and 2D inputs (depth 0, scale off by up to 10%) in 30%.

Schedule (:func:`train_smplr`): pose and shape networks with L1 on rotation
matrices and betas (clean points + 5 mm noise); fine-tuning with L_SMPL
(L1 on the 42 points through the body model) added; then one DAE per input
set with L1 on the 42 points.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import roma
import torch

from fitkit.eval.metrics import mpjpe, pa_mpjpe
from fitkit.eval.synthetic import sample_body_poses
from fitkit.body.keypoint_formats import get_format
from fitkit.init.landmarks import JL_NAMES, joints_and_landmarks
from fitkit.init.mean import mean_body_pose
from fitkit.init.smplr import JL_FORMAT, SMPLR, hip_centre, relative_vectors

__all__ = ["SMPLRData", "corrupt", "train_smplr", "evaluate_smplr", "TrainSettings"]


@dataclass
class TrainSettings:
    steps_regress: int = 3000
    steps_finetune: int = 1000
    steps_dae: int = 2000
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0


class SMPLRData:
    """Random posed bodies and their keypoints, drawn batch by batch.

    Args:
        model: open body model (float32).
        any_yaw: fraction of bodies turned by any yaw (the rest by at most 0.6 rad).
        split: ``'train'`` or ``'test'`` (disjoint pose clips and seeds).
        input_formats: keypoint sets to produce (``'jl42'`` and/or registered formats).
    """

    def __init__(self, model, split: str, input_formats: Sequence[str], seed: int = 0, any_yaw: float = 0.5):
        from fitkit.body.open_body import open_body_arrays
        from fitkit.priors.pose_data import load_pose_data

        self.model = model
        self.any_yaw = any_yaw
        self.formats = list(input_formats)
        self.poses = torch.as_tensor(load_pose_data("train" if split == "train" else "test").body_pose)
        self.gen = torch.Generator().manual_seed(2 * seed + (0 if split == "train" else 1))
        d = torch.as_tensor(open_body_arrays()["gender_direction"][:model.num_betas], dtype=torch.float32)
        self.gender_direction = d

    def sample(self, B: int) -> dict[str, torch.Tensor]:
        """``global_orient`` (B,3), ``body_pose`` (B,69), ``betas`` (B,k), ``gender`` (B,),
        ``jl`` (B,42,3) and ``points[fmt]`` (B,K,3), all hip-centred in camera axes."""
        g = self.gen
        orient, pose = sample_body_poses(B, generator=g)
        from_data = torch.rand(B, generator=g) < 0.5
        pick = torch.randint(len(self.poses), (B,), generator=g)
        pose = torch.where(from_data[:, None], self.poses[pick], pose)
        yaw = (torch.rand(B, generator=g) * 2 - 1) * torch.where(torch.rand(B, generator=g) < self.any_yaw, math.pi, 0.6)
        Ry = roma.rotvec_to_rotmat(torch.stack([torch.zeros(B), yaw, torch.zeros(B)], -1))
        orient = roma.rotmat_to_rotvec(Ry @ roma.rotvec_to_rotmat(orient))
        gender = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0)
        betas = 0.9 * torch.randn(B, self.model.num_betas, generator=g) + 0.4 * gender[:, None] * self.gender_direction
        with torch.no_grad():
            jl = joints_and_landmarks(self.model, orient, pose, betas)
            centre = hip_centre(jl, JL_FORMAT)
            points = {}
            for fmt in self.formats:
                if fmt == JL_FORMAT:
                    points[fmt] = jl - centre
                else:
                    kp = self.model(orient, pose, betas, keypoints=fmt, validate=False).keypoints
                    points[fmt] = kp - centre
        return {"global_orient": orient, "body_pose": pose, "betas": betas, "gender": gender,
                "jl": jl - centre, "points": points}


def _limb_members(fmt: str) -> list[list[int]]:
    """Index groups of the forearms and shins (incl. hands, feet) of a keypoint set."""
    names = JL_NAMES if fmt == JL_FORMAT else get_format(fmt).names
    groups = []
    for word in ("left_elbow", "right_elbow", "left_knee", "right_knee"):
        side, part = word.split("_")
        below = {"elbow": ("elbow", "wrist", "hand", "pinky", "index", "thumb"),
                 "knee": ("knee", "ankle", "heel", "foot", "toe", "big_toe", "small_toe")}[part]
        groups.append([i for i, n in enumerate(names) if n.startswith(side) and any(b in n for b in below)])
    return [grp for grp in groups if grp]


def corrupt(points: torch.Tensor, fmt: str, generator: torch.Generator, *, scale: float = 1.0,
            flat_rate: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Structured noise on hip-centred points (see the module doc).

    Args:
        points: (B, K, 3) clean points.
        scale: multiplies every noise magnitude (0 = clean).
        flat_rate: fraction of samples turned into 2D inputs.
    Returns:
        (noisy points (B, K, 3), confidences (B, K) in {0, 1}, flat (B,) bool).
    """
    g = generator
    B, K, _ = points.shape
    sigma = torch.rand(B, 1, 1, generator=g) * 0.04 * scale
    x = points + sigma * torch.randn(B, K, 3, generator=g)
    depth = (torch.rand(B, 1, generator=g) < 0.5) * torch.rand(B, 1, generator=g) * 0.08 * scale
    x[..., 2] = x[..., 2] + depth * torch.randn(B, K, generator=g)
    for members in _limb_members(fmt):
        hit = (torch.rand(B, generator=g) < 0.3 / 4) * scale
        shift = hit[:, None] * 0.05 * torch.randn(B, 3, generator=g)
        x[:, members] = x[:, members] + shift[:, None]
    drop = torch.rand(B, 1, generator=g) * 0.15 * min(scale, 1.0)
    conf = (torch.rand(B, K, generator=g) >= drop).float()
    if fmt == JL_FORMAT:
        no_lm = torch.rand(B, generator=g) < 0.3 * min(scale, 1.0)
        conf[no_lm, 24:] = 0.0
    flat = torch.rand(B, generator=g) < flat_rate
    s = 1.0 + (torch.rand(B, 1, 1, generator=g) * 2 - 1) * 0.1 * scale
    x = torch.where(flat[:, None, None], x * s, x)
    x[..., 2] = torch.where(flat[:, None], torch.zeros_like(x[..., 2]), x[..., 2])
    return x, conf, flat


def _rotmats(batch) -> torch.Tensor:
    aa = torch.cat([batch["global_orient"][:, None], batch["body_pose"].reshape(-1, 23, 3)], dim=1)
    return roma.rotvec_to_rotmat(aa)


def _jl_of(model, rot, betas) -> torch.Tensor:
    aa = roma.rotmat_to_rotvec(rot)
    jl = joints_and_landmarks(model, aa[:, 0], aa[:, 1:].flatten(1), betas)
    return jl - hip_centre(jl, JL_FORMAT)


def train_smplr(model, input_formats: Sequence[str] = (JL_FORMAT,), settings: TrainSettings = TrainSettings(),
                log: Optional[Callable[[str], None]] = print) -> SMPLR:
    """Train SMPLR from scratch on synthetic data (see the module doc). Deterministic for a seed."""
    torch.manual_seed(settings.seed)
    data = SMPLRData(model, "train", input_formats, seed=settings.seed)
    with torch.no_grad():
        rest = _jl_of(model, roma.rotvec_to_rotmat(torch.zeros(1, 24, 3)), torch.zeros(1, model.num_betas))
        template = relative_vectors(rest)[0].norm(dim=-1)
    net = SMPLR(input_formats, num_betas=model.num_betas, template_lengths=template)
    gen = torch.Generator().manual_seed(settings.seed + 100)
    t0 = time.time()

    def report(stage, step, total, loss):
        if log and (step % 500 == 0 or step == total - 1):
            log(f"[{stage}] step {step + 1}/{total} loss {loss:.4f} ({time.time() - t0:.0f} s)")

    params = list(net.pose_net.parameters()) + list(net.shape_net.parameters())
    opt = torch.optim.Adam(params, lr=settings.lr)
    total = settings.steps_regress + settings.steps_finetune
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    net.train()
    for step in range(total):
        b = data.sample(settings.batch)
        jl_in = b["jl"] + 0.005 * torch.randn(b["jl"].shape, generator=gen)
        gender = b["gender"] * (torch.rand(settings.batch, generator=gen) < 0.5)
        out = net.regress(jl_in, gender)
        loss = (out["rotmats"] - _rotmats(b)).abs().mean() + (out["betas"] - b["betas"]).abs().mean()
        if step >= settings.steps_regress:
            loss = loss + 10.0 * (_jl_of(model, out["rotmats"], out["betas"]) - b["jl"]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        report("pose+shape" if step < settings.steps_regress else "finetune L_SMPL", step, total, loss.item())

    for fmt in input_formats:
        dae = net.daes[fmt]
        opt = torch.optim.Adam(dae.parameters(), lr=settings.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps_dae)
        for step in range(settings.steps_dae):
            b = data.sample(settings.batch)
            x, conf, flat = corrupt(b["points"][fmt], fmt, gen)
            pred = torch.cat([net.denoise(x[flat], conf[flat], fmt, flat=True),
                              net.denoise(x[~flat], conf[~flat], fmt, flat=False)])
            loss = (pred - torch.cat([b["jl"][flat], b["jl"][~flat]])).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            report(f"DAE {fmt}", step, settings.steps_dae, loss.item())
    return net.eval()


@torch.no_grad()
def evaluate_smplr(net: SMPLR, model, fmt: str = JL_FORMAT, *, n: int = 1000, seed: int = 0,
                   noise: float = 1.0, flat: bool = False, procrustes: bool = False,
                   any_yaw: float = 0.0) -> dict[str, float]:
    """Errors (mm, 24 SMPL joints and 18 landmarks) on held-out bodies.

    Returns MPJPE / PA-MPJPE of the mean-pose init (facing the camera) and
    of SMPLR from noisy ``fmt`` keypoints (``noise`` scales :func:`corrupt`;
    ``flat``: 2D input), and the DAE's own error on the 42 points. By
    default bodies face the camera within 0.6 rad of yaw (``any_yaw``: the
    fraction turned any way), where the mean-pose init's orientation is fair.
    """
    data = SMPLRData(model, "test", [fmt], seed=seed, any_yaw=any_yaw)
    b = data.sample(n)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x, conf, _ = corrupt(b["points"][fmt], fmt, gen, scale=noise, flat_rate=1.0 if flat else 0.0)
    pred = net.predict(model, x, conf, fmt, flat=flat, procrustes=procrustes)
    gt_j = joints_and_landmarks(model, b["global_orient"], b["body_pose"], b["betas"])
    pr_j = joints_and_landmarks(model, pred["global_orient"], pred["body_pose"], pred["betas"])
    from fitkit.camera import facing_camera_orient
    mean_j = joints_and_landmarks(model, facing_camera_orient(n), mean_body_pose(n), torch.zeros_like(b["betas"]))
    mm = lambda t: float(t.mean()) * 1000  # noqa: E731
    return {
        "mean_init_mpjpe": mm(mpjpe(mean_j[:, :24], gt_j[:, :24])),
        "mean_init_pa_mpjpe": mm(pa_mpjpe(mean_j[:, :24], gt_j[:, :24])),
        "smplr_mpjpe": mm(mpjpe(pr_j[:, :24], gt_j[:, :24])),
        "smplr_pa_mpjpe": mm(pa_mpjpe(pr_j[:, :24], gt_j[:, :24])),
        "smplr_landmark_error": mm((pr_j[:, 24:] - pr_j[:, :1] - gt_j[:, 24:] + gt_j[:, :1]).norm(dim=-1)),
        "dae_jl_error": mm((pred["jl"] - b["jl"]).norm(dim=-1)),
        "input_jl_error": mm((x - b["points"][fmt]).norm(dim=-1)[conf > 0]) if fmt == JL_FORMAT else float("nan"),
    }


def standard_evaluation(net: SMPLR, model, *, n: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """The evaluation reported in the model card: every input set the net has,
    3D and 2D (lifted); for ``jl42`` also clean input, Procrustes, and any yaw."""
    rows = {}
    for fmt in net.input_formats:
        rows[f"{fmt} 3D noisy"] = evaluate_smplr(net, model, fmt, n=n, seed=seed)
        rows[f"{fmt} 2D noisy (lifted)"] = evaluate_smplr(net, model, fmt, n=n, seed=seed, flat=True)
    if JL_FORMAT in net.input_formats:
        rows[f"{JL_FORMAT} 3D clean"] = evaluate_smplr(net, model, JL_FORMAT, n=n, seed=seed, noise=0.0)
        rows[f"{JL_FORMAT} 3D noisy + Procrustes"] = evaluate_smplr(net, model, JL_FORMAT, n=n, seed=seed,
                                                                    procrustes=True)
        rows[f"{JL_FORMAT} 3D noisy, any yaw"] = evaluate_smplr(net, model, JL_FORMAT, n=n, seed=seed, any_yaw=1.0)
    return rows
