"""Training and evaluation of the DaNet-style initializer (:mod:`fitkit.init.danet`).

Training (:func:`train_danet`): a pool of ``samples`` bodies of the open body is
rendered once into memory (:func:`fitkit.init.danet_data.make_dataset`: poses from
the open pose data's *train* split, mirrored copies included, and from
:func:`fitkit.eval.synthetic.sample_body_poses`; any yaw; betas ~ N(0, 1); random
camera and placement) and visited in random batches with fresh augmentation per
visit: PartDrop (Eq. 5, every part of every sample dropped with probability
``drop_rate``) and Gaussian jitter of the ground-truth 2D joints that centre the
joint crops. (Rendering costs about 10 ms per body on one CPU thread, a training
step about 5-7 ms per sample, so rendering every batch afresh would more than halve
the number of steps a fixed budget buys; see the model card.)

Losses (Eq. 4, L1 throughout): rotation matrices of the 23 body joints and the
global orientation (``L_smpl``), betas, the crop camera (s, tx, ty), the 2D joints of
the global stream (``L_roi``, soft-argmax positions), and after ``warmup`` of the
steps, root-relative 3D joints (``L_3Dkp``) and a fixed subsample of vertices
(``L_vert``) posed through the body model from the predicted rotation matrices
(no axis-angle round trip). Adam with a cosine learning-rate decay.

Evaluation (:func:`evaluate_danet`): held-out bodies (poses of the pose data's *test*
split and of a ``sample_body_poses`` seed the training never used), rendered with the
same camera distribution; errors in millimetres: PVE (root-aligned at the pelvis,
:func:`fitkit.eval.metrics.pve`), MPJPE (pelvis-aligned) and PA-MPJPE over the 24
SMPL joints, for the mean-pose init and for DaNet at each PartDrop rate.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import roma
import torch

from fitkit.body import lbs
from fitkit.camera import facing_camera_orient
from fitkit.errors import ParameterError
from fitkit.eval.metrics import mpjpe, pa_mpjpe, pve
from fitkit.init.danet import DaNet, DaNetInit
from fitkit.init.danet_data import (DaNetData, iuv_to_parts, make_dataset, part_drop, remove_parts,
                                    render_bodies, sample_bodies, sample_part_drop)

__all__ = ["TrainConfig", "train_danet", "evaluate_danet", "body_points", "format_table"]


@dataclass
class TrainConfig:
    """Settings of :func:`train_danet` (all stored in the weight file)."""

    steps: int = 2500
    batch_size: int = 32
    samples: int = 10000        # bodies rendered for training
    data_fraction: float = 0.5  # share of them posed from the pose data (train split)
    lr: float = 2e-3
    final_lr: float = 2e-5
    weight_decay: float = 0.0
    drop_rate: float = 0.3      # PartDrop's gamma
    jitter: float = 0.03        # std of the joint-crop centre jitter, normalized crop units (R/2 pixels = 1)
    warmup: float = 0.2         # share of steps before L_vert and L_3Dkp join
    w_rot: float = 1.0
    w_orient: float = 1.0
    w_betas: float = 0.05
    w_cam: float = 1.0
    w_2d: float = 1.0
    w_vert: float = 2.0
    w_kp: float = 2.0
    num_vertices: int = 600     # vertex subsample of L_vert
    seed: int = 0


def body_points(model, plan, rotmats: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints and planned vertices of a body model posed by rotation matrices (differentiable).

    Args:
        model: a :class:`fitkit.body.BodyModel`.
        plan: ``model.plan(vertex_ids)``.
        rotmats: (B, 24, 3, 3) local rotations (joint 0 = global orientation).
        betas: (B, num_betas).
    Returns:
        joints (B, 24, 3) and vertices (B, S, 3), meters, without translation.
    """
    B, J = rotmats.shape[:2]
    rest_joints = model.J_template + (betas @ model.J_shapedirs_flat).reshape(B, J, 3)
    joints, transforms = lbs.forward_kinematics(rotmats, rest_joints, model.parents)
    v = plan.v_template + (betas @ plan.shapedirs).reshape(B, -1, 3)
    if plan.posedirs is not None:
        v = v + (lbs.pose_feature(rotmats) @ plan.posedirs).reshape(B, -1, 3)
    verts = lbs.skin_vertices(v, plan.weights, transforms)
    if plan.vertex_slots is not None:
        verts = verts.index_select(1, plan.vertex_slots)
    return joints, verts


def _gt_rotmats(data: DaNetData) -> torch.Tensor:
    aa = torch.cat([data.global_orient, data.body_pose], dim=1).reshape(-1, 24, 3)
    return roma.rotvec_to_rotmat(aa.double()).float()


def train_danet(model, charts, config: TrainConfig = TrainConfig(), *, net: Optional[DaNet] = None,
                log: Optional[Callable[[str], None]] = print, data: Optional[DaNetData] = None) -> tuple[DaNet, dict]:
    """Train a :class:`DaNet` on rendered open bodies (see the module docstring).

    Args:
        model: the open body, ``load_body_model('open', num_betas=10)``.
        charts: ``open_body_charts(model)``.
        config: :class:`TrainConfig`.
        net: a network to start from (default a new ``DaNet()`` with the mean pose as the
            per-joint heads' starting point).
        log: progress printer (None: silent).
        data: a pre-rendered pool (default: rendered here with ``config.samples`` and seed
            ``config.seed``).
    Returns:
        (net in eval mode, history dict: seconds for data and training, loss curve).
    """
    from fitkit.init.mean import mean_body_pose

    cfg = config
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.samples < 1:
        raise ParameterError(f"steps, batch_size and samples must be >= 1, got {cfg.steps}, "
                             f"{cfg.batch_size}, {cfg.samples}")
    say = log or (lambda s: None)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if data is None:
        data = make_dataset(model, charts, cfg.samples, seed=cfg.seed, split="train",
                            data_fraction=cfg.data_fraction)
    t_data = time.perf_counter() - t0
    say(f"rendered {len(data)} training bodies in {t_data:.1f} s")
    gt_rot = _gt_rotmats(data)
    if net is None:
        net = DaNet()
        net.set_mean_pose(mean_body_pose(1)[0])
    net.train()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    vids = torch.randperm(model.num_vertices, generator=g)[:cfg.num_vertices].sort().values
    plan = model.plan(vids)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm_steps = int(cfg.warmup * cfg.steps)
    history = {"step": [], "loss": [], "parts": {}}
    running: dict[str, float] = {}
    every = max(1, cfg.steps // 15)
    t1 = time.perf_counter()
    for step in range(cfg.steps):
        lr = cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=g)
        drop = sample_part_drop(cfg.batch_size, cfg.drop_rate, g)
        x = iuv_to_parts(data.crop[idx].float(), drop)
        j2d = data.joints2d[idx]
        centers = j2d[:, 1:] + cfg.jitter * torch.randn(j2d[:, 1:].shape, generator=g)
        out = net(x, centers)
        rot = gt_rot[idx]
        terms = {"rot": (out["pose_rotmat"] - rot[:, 1:]).abs().mean() * cfg.w_rot,
                 "orient": (out["global_rotmat"] - rot[:, 0]).abs().mean() * cfg.w_orient,
                 "betas": (out["betas"] - data.betas[idx]).abs().mean() * cfg.w_betas,
                 "cam": (out["cam"] - data.cam[idx]).abs().mean() * cfg.w_cam,
                 "2d": (out["joints2d"] - j2d).abs().mean() * cfg.w_2d}
        if step >= warm_steps:
            pred_rot = torch.cat([out["global_rotmat"][:, None], out["pose_rotmat"]], dim=1)
            pj, pv = body_points(model, plan, pred_rot, out["betas"])
            with torch.no_grad():
                gj, gv = body_points(model, plan, rot, data.betas[idx])
            terms["kp"] = ((pj - pj[:, :1]) - (gj - gj[:, :1])).abs().mean() * cfg.w_kp
            terms["vert"] = ((pv - pj[:, :1]) - (gv - gj[:, :1])).abs().mean() * cfg.w_vert
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            count = every if (step + 1) % every == 0 else (step + 1) % every
            mean = {k: v / count for k, v in running.items()}
            history["step"].append(step + 1)
            history["loss"].append(sum(mean.values()))
            for k, v in mean.items():
                history["parts"].setdefault(k, []).append(v)
            running = {}
            rate = (time.perf_counter() - t1) / (step + 1)
            say(f"step {step + 1:5d}/{cfg.steps}  loss {sum(mean.values()):.4f}  "
                + " ".join(f"{k} {v:.4f}" for k, v in mean.items()) + f"  lr {lr:.1e}  {rate * 1000:.0f} ms/step")
    history["data_seconds"] = t_data
    history["train_seconds"] = time.perf_counter() - t1
    history["config"] = asdict(cfg)
    net.eval()
    return net, history


# ---------------------------------------------------------------- evaluation

def _errors_mm(model, params: dict, gt_vertices: torch.Tensor, gt_joints: torch.Tensor) -> dict[str, torch.Tensor]:
    dt = model.dtype
    zero = torch.zeros(params["betas"].shape[0], 3, dtype=dt)
    out = model(params["global_orient"].to(dt), params["body_pose"].to(dt), params["betas"].to(dt), zero,
                vertices="all")
    pj, pv = out.joints, out.vertices
    return {"pve": 1000 * pve(pv, gt_vertices, pj[:, 0], gt_joints[:, 0]),
            "mpjpe": 1000 * mpjpe(pj, gt_joints), "pa_mpjpe": 1000 * pa_mpjpe(pj, gt_joints)}


@torch.no_grad()
def evaluate_danet(net, n: int = 400, seed: int = 20240, drop_rates: Sequence[float] = (0.0, 0.1, 0.3, 0.5), *,
                   remove_rates: Sequence[float] = (), model=None, charts=None, chunk: int = 100,
                   data_fraction: float = 0.5) -> dict:
    """Held-out errors of the mean-pose init and of DaNet from ground-truth IUV maps.

    Bodies: ``n`` of them, a share ``data_fraction`` posed from the open pose data's *test*
    split, the rest from ``sample_body_poses`` with generator seed ``seed`` (training uses
    ``TrainConfig.seed``, 0 by default, and the *train* split), with
    :func:`fitkit.init.danet_data.render_bodies`' cameras. PartDrop at rate r is applied
    to the per-part crops with the fixed generator seed ``seed + 1 + round(1000 r)``.

    Args:
        net: a :class:`DaNetInit` (or a :class:`DaNet`, wrapped).
        drop_rates: PartDrop rates (Eq. 5 on the network input).
        remove_rates: rates at which parts are instead removed from the full IUV map
            (their pixels become background, as a missed part would look; the crop box
            then follows the remaining foreground).
        model, charts: the open body and its charts (default: loaded here).
    Returns:
        dict: ``n``, ``seed``, ``rows``: {name: {'pve', 'mpjpe', 'pa_mpjpe'} mean mm}, with
        names ``mean_init`` (mean pose, facing the camera, zero betas),
        ``mean_pose_gt_orient`` (mean pose, ground-truth global orientation, zero betas; a
        reference), ``danet_drop_<r>``, ``danet_drop_0_gt_betas`` (DaNet's pose and orientation
        with the ground-truth betas: the open body's betas are mostly overall size, which a
        scale-normalized crop cannot tell; a reference) and ``danet_removed_<r>``; ``valid``
        per row (samples with foreground; all of them for PartDrop rows).
    """
    from fitkit.body import load_body_model
    from fitkit.init.mean import mean_body_pose
    from fitkit.render.iuv import open_body_charts

    if not isinstance(net, DaNetInit):
        net = DaNetInit(net)
    net = net.eval()
    model = model if model is not None else load_body_model("open", num_betas=10)
    charts = charts if charts is not None else open_body_charts(model)
    g = torch.Generator().manual_seed(int(seed))
    params = sample_bodies(n, g, split="test", data_fraction=data_fraction)
    sums: dict[str, dict[str, float]] = {}
    valid_counts: dict[str, int] = {}

    def add(name, errs, count):
        row = sums.setdefault(name, {})
        for k, v in errs.items():
            row[k] = row.get(k, 0.0) + float(v.sum())
        valid_counts[name] = valid_counts.get(name, 0) + count

    drop_gens = {r: torch.Generator().manual_seed(int(seed) + 1 + round(1000 * r)) for r in drop_rates}
    remove_gens = {r: torch.Generator().manual_seed(int(seed) + 5001 + round(1000 * r)) for r in remove_rates}
    for i in range(0, n, chunk):
        sub = {k: v[i:i + chunk] for k, v in params.items()}
        m = sub["betas"].shape[0]
        r = render_bodies(model, charts, sub, g)
        gv, gj = r["vertices"] - r["transl"][:, None], r["joints"] - r["transl"][:, None]
        mean = {"global_orient": facing_camera_orient(m), "body_pose": mean_body_pose(m),
                "betas": torch.zeros(m, 10)}
        add("mean_init", _errors_mm(model, mean, gv, gj), m)
        add("mean_pose_gt_orient", _errors_mm(model, dict(mean, global_orient=sub["global_orient"]), gv, gj), m)
        x, center, size, valid = net.prepare(r["iuv"])
        for rate in drop_rates:
            xd = part_drop(x, sample_part_drop(m, rate, drop_gens[rate]))
            pred = net.predict_parts(xd, center, size, valid, r["K"])
            add(f"danet_drop_{rate:g}", _errors_mm(model, pred, gv, gj), int(valid.sum()))
            if rate == 0:
                add("danet_drop_0_gt_betas", _errors_mm(model, dict(pred, betas=sub["betas"]), gv, gj),
                    int(valid.sum()))
        for rate in remove_rates:
            iuv = remove_parts(r["iuv"], sample_part_drop(m, rate, remove_gens[rate]))
            pred = net.predict_full(iuv, r["K"])
            add(f"danet_removed_{rate:g}", _errors_mm(model, pred, gv, gj), int(pred["valid"].sum()))
    order = sorted(sums, key=lambda name: (name.startswith("danet"), name.endswith("gt_betas"),
                                           name.startswith("danet_removed")))  # stable: insertion order otherwise
    rows = {name: {k: v / n for k, v in sums[name].items()} for name in order}
    return {"n": n, "seed": int(seed), "data_fraction": data_fraction, "rows": rows, "valid": valid_counts,
            "unit": "mm", "metrics": {"pve": "mean vertex error after translating each mesh to its pelvis joint",
                                      "mpjpe": "mean error of the 24 SMPL joints, pelvis-aligned",
                                      "pa_mpjpe": "the same after a per-sample similarity (Procrustes) alignment"}}


def format_table(result: dict) -> str:
    """The rows of :func:`evaluate_danet` as a Markdown table."""
    lines = ["| init | PVE (mm) | MPJPE (mm) | PA-MPJPE (mm) |", "|---|---:|---:|---:|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['pve']:.1f} | {row['mpjpe']:.1f} | {row['pa_mpjpe']:.1f} |")
    return "\n".join(lines)
