"""DaNet-style IUV -> SMPL initializer: data layout, PartDrop, crops, camera conversion,
input validation, weight files and the committed weights (fitkit/init/danet*.py)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from fitkit import shipped
from fitkit.body import load_body_model
from fitkit.camera import points_full_to_crop, project, weak_perspective_project
from fitkit.errors import ModelFileError, ParameterError
from fitkit.init.danet import DaNet, DaNetInit, load_danet, save_danet
from fitkit.init.danet_data import (NUM_CHANNELS, NUM_PARTS, crop_iuv, crop_pixels_to_normalized,
                                    foreground_boxes, iuv_to_parts, part_channels, part_drop, remove_parts,
                                    render_bodies, sample_bodies, sample_part_drop, targets_from_render)
from fitkit.priors.files import file_sha256
from fitkit.render.iuv import open_body_charts

WEIGHTS = shipped.weight_path("initializers/open_danet.pt")
CARD = shipped.card_path("initializers/open_danet.pt")


@pytest.fixture(scope="module")
def body():
    model = load_body_model("open", num_betas=10)
    return model, open_body_charts(model)


@pytest.fixture(scope="module")
def rendered(body):
    model, charts = body
    g = torch.Generator().manual_seed(123)
    params = sample_bodies(6, g, split="test")
    return render_bodies(model, charts, params, g)


@pytest.fixture(scope="module")
def fresh_init():
    torch.manual_seed(0)
    return DaNetInit(DaNet()).eval()


def _random_crops(n=3, r=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    part = torch.randint(0, NUM_PARTS + 1, (n, r, r), generator=g).float()
    uv = torch.rand(n, r, r, 2, generator=g) * (part[..., None] > 0)
    return torch.cat([part[..., None], uv], dim=-1)


# ---------------------------------------------------------------- layout and PartDrop

def test_per_part_layout_puts_each_pixel_in_its_parts_channels():
    iuv = _random_crops()
    x = iuv_to_parts(iuv)
    assert x.shape == (3, NUM_CHANNELS, 16, 16)
    n, yy, xx = 1, 4, 7
    p = int(iuv[n, yy, xx, 0])
    if p == 0:  # make sure the probed pixel is on a part
        iuv[n, yy, xx] = torch.tensor([5.0, 0.25, 0.75])
        x, p = iuv_to_parts(iuv), 5
    col = x[n, :, yy, xx]
    ci, cu, cv = part_channels(p)
    assert col[ci] == 1 and col[cu] == pytest.approx(float(iuv[n, yy, xx, 1])) \
        and col[cv] == pytest.approx(float(iuv[n, yy, xx, 2]))
    assert int((col != 0).sum()) <= 3 and col[0] == 0
    bg = (iuv[..., 0] == 0)
    assert torch.equal(x[:, 0], bg.float())
    assert torch.equal(x[:, 1:1 + NUM_PARTS].sum(1), (~bg).float())  # one part per foreground pixel


def test_part_drop_zeroes_exactly_the_chosen_parts_channels():
    iuv = _random_crops(n=4)
    x = iuv_to_parts(iuv)
    drop = torch.zeros(4, NUM_PARTS, dtype=torch.bool)
    drop[0, [0, 6, 23]] = True  # parts 1, 7, 24 of sample 0
    drop[2, 12] = True          # part 13 of sample 2
    y = part_drop(x, drop)
    zeroed = torch.zeros(4, NUM_CHANNELS, dtype=torch.bool)
    for n, p in ((0, 1), (0, 7), (0, 24), (2, 13)):
        zeroed[n, list(part_channels(p))] = True
    assert bool((y[zeroed] == 0).all())
    assert torch.equal(y[~zeroed], x[~zeroed])  # background channel and every other part untouched
    assert bool((x[zeroed] != 0).any())          # the test drops parts that are there
    # the one-pass version used in training gives the same tensor
    assert torch.equal(iuv_to_parts(iuv, drop), y)
    # the mask: independent per part, at the rate asked
    mask = sample_part_drop(2000, 0.3, torch.Generator().manual_seed(1))
    assert mask.shape == (2000, NUM_PARTS) and abs(mask.float().mean().item() - 0.3) < 0.01
    with pytest.raises(ParameterError, match="drop"):
        part_drop(x, drop[:2])


def test_remove_parts_makes_their_pixels_background():
    iuv = _random_crops(n=2)
    drop = torch.zeros(2, NUM_PARTS, dtype=torch.bool)
    drop[1, 4] = True
    out = remove_parts(iuv, drop)
    gone = iuv[1, ..., 0] == 5
    assert bool(gone.any()) and bool((out[1][gone] == 0).all())
    assert torch.equal(out[0], iuv[0]) and torch.equal(out[1][~gone], iuv[1][~gone])


# ---------------------------------------------------------------- crops and camera

def test_crop_contains_the_whole_foreground(rendered):
    iuv = rendered["iuv"]
    center, size, valid = foreground_boxes(iuv)
    assert bool(valid.all())
    res = 64
    crop = crop_iuv(iuv, center, size, res)
    for n in range(iuv.shape[0]):
        ys, xs = torch.nonzero(iuv[n, ..., 0] > 0, as_tuple=True)
        q = points_full_to_crop(torch.stack([xs, ys], -1).float()[None], center[n:n + 1], size[n:n + 1], res)[0]
        # every foreground pixel centre lies inside the crop, with the 1.2 margin left over
        assert float(q.min()) > 0.05 * res and float(q.max()) < 0.95 * res
        fg = crop[n, ..., 0] > 0
        assert bool(fg.any())
        assert not bool(fg[0].any() or fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())
        # the crop's foreground spans 1 / 1.2 of the crop along the box's longer side
        rows, cols = torch.nonzero(fg, as_tuple=True)
        span = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
        assert abs(span - res / 1.2) <= 2
    # nearest sampling: part ids stay whole numbers, U, V in [0, 1]
    assert torch.equal(crop[..., 0], crop[..., 0].round()) and float(crop[..., 1:].max()) <= 1


def test_empty_foreground_box_is_flagged_and_finite():
    iuv = torch.zeros(2, 30, 40, 3)
    iuv[1, 10:20, 5:9, 0] = 3
    center, size, valid = foreground_boxes(iuv)
    assert valid.tolist() == [False, True]
    assert torch.allclose(center[0], torch.tensor([19.5, 14.5])) and float(size[0]) == 40
    assert torch.allclose(center[1], torch.tensor([6.5, 14.5])) and float(size[1]) == pytest.approx(12.0)


def test_crop_camera_round_trips_to_the_translation(rendered, fresh_init):
    data = targets_from_render(rendered)
    transl = fresh_init.crop_cam_to_transl(data.cam, data.center, data.size, data.K)
    assert torch.allclose(transl, rendered["transl"], atol=1e-4)
    # independent path: where the weak-perspective camera puts a point (normalized crop
    # coordinates) against where K puts it after the translation. Exact at the body's origin
    # (the point the translation moves), approximate elsewhere (the body's depth extent).
    K, res = rendered["K"], 64

    def persp_in_crop(points):
        return crop_pixels_to_normalized(points_full_to_crop(project(points, K), data.center, data.size, res), res)

    origin = torch.zeros(len(K), 1, 3)
    at_origin = persp_in_crop(origin + rendered["transl"][:, None])
    assert torch.allclose(weak_perspective_project(origin, data.cam), at_origin, atol=1e-4)
    joints_rel = rendered["joints"] - rendered["transl"][:, None]
    persp = persp_in_crop(rendered["joints"])
    assert torch.allclose(persp, data.joints2d, atol=1e-5)
    err = (weak_perspective_project(joints_rel, data.cam) - persp).norm(dim=-1)  # the crop is 2 wide
    assert float(err.mean()) < 0.05 and float(err.mean(1).max()) < 0.1
    # a wrong camera (scale off by 10 %) is caught by the same comparison
    wrong = data.cam * torch.tensor([1.1, 1.0, 1.0])
    assert float((weak_perspective_project(joints_rel, wrong) - persp).norm(dim=-1).mean()) > float(err.mean()) + 0.02


def test_joint_crops_are_centred_on_the_joints():
    torch.manual_seed(0)
    net = DaNet()
    res = net.config["res"]
    x = torch.zeros(1, 1, res, res)
    centers = torch.tensor([[[-0.4, 0.3]]]).expand(1, 23, 2).clone()
    centers[0, 5] = torch.tensor([0.5, -0.6])
    for c in (centers[0, 0], centers[0, 5]):  # a blob at each centre
        q = (c + 1) * res / 2 - 0.5
        yy, xx = torch.meshgrid(torch.arange(res).float(), torch.arange(res).float(), indexing="ij")
        x[0, 0] += torch.exp(-((xx - q[0]) ** 2 + (yy - q[1]) ** 2) / 2.0)
    crops = net.joint_crops(x, centers)
    r = net.config["local_res"]
    assert crops.shape == (23, 1, r, r)
    for j in (0, 5):
        peak = torch.nonzero(crops[j, 0] == crops[j, 0].max())[0].float()
        assert torch.allclose(peak, torch.tensor([(r - 1) / 2, (r - 1) / 2]), atol=0.6)
    # Eq. 2: the crop side is alpha_k * max(w_bbox, h_bbox) + delta in normalized crop units
    alpha = torch.tensor(net.config["alpha"])
    assert torch.allclose(net.roi_side, alpha * 2 / 1.2 + net.config["delta"])


# ---------------------------------------------------------------- inference API

def test_no_foreground_gives_invalid_rows_with_finite_fallback(fresh_init):
    from fitkit.init.mean import mean_body_pose

    iuv = torch.zeros(3, 48, 40, 3)
    iuv[1, 10:30, 12:20, 0] = 2.0
    iuv[1, 10:30, 12:20, 1:] = 0.5
    K = torch.tensor([[60.0, 0, 19.5], [0, 60.0, 23.5], [0, 0, 1]])
    out = fresh_init.predict_full(iuv, K.expand(3, 3, 3))
    assert out["valid"].tolist() == [False, True, False]
    for key, width in (("global_orient", 3), ("body_pose", 69), ("betas", 10), ("transl", 3)):
        assert out[key].shape == (3, width) and bool(torch.isfinite(out[key]).all()), key
    for n in (0, 2):
        assert torch.allclose(out["body_pose"][n], mean_body_pose(1)[0], atol=1e-6)
        assert torch.allclose(out["global_orient"][n].abs(), torch.tensor([math.pi, 0, 0]), atol=1e-5)
        assert bool((out["betas"][n] == 0).all() and (out["transl"][n] == 0).all())
    assert float(out["transl"][1, 2]) > 0  # in front of the camera


def test_predict_full_equals_prepare_then_predict_parts(fresh_init, rendered):
    out = fresh_init.predict_full(rendered["iuv"], rendered["K"])
    x, center, size, valid = fresh_init.prepare(rendered["iuv"])
    again = fresh_init.predict_parts(x, center, size, valid, rendered["K"])
    for k in out:
        assert torch.equal(out[k], again[k]), k


@pytest.mark.parametrize("mutate, field", [
    (lambda iuv, K: (iuv[0], K), "iuv"),                                          # (H, W, 3)
    (lambda iuv, K: (iuv[..., :2], K), "iuv"),                                    # 2 channels
    (lambda iuv, K: (iuv.long(), K), "iuv"),                                      # integer dtype
    (lambda iuv, K: (iuv.index_put((torch.tensor([0]), torch.tensor([3]), torch.tensor([4]),
                                    torch.tensor([1])), torch.tensor(float("nan"))), K), "iuv"),
    (lambda iuv, K: (iuv.index_put((torch.tensor([1]), torch.tensor([3]), torch.tensor([4]),
                                    torch.tensor([0])), torch.tensor(25.0)), K), r"I"),
    (lambda iuv, K: (iuv.index_put((torch.tensor([1]), torch.tensor([3]), torch.tensor([4]),
                                    torch.tensor([0])), torch.tensor(2.5)), K), r"I"),
    (lambda iuv, K: (iuv.index_put((torch.tensor([1]), torch.tensor([3]), torch.tensor([4]),
                                    torch.tensor([2])), torch.tensor(1.5)), K), r"U, V"),
    (lambda iuv, K: (iuv, K[:1]), "K"),                                           # batch mismatch
    (lambda iuv, K: (iuv, K[:, :2]), "K"),                                        # (N, 2, 3)
    (lambda iuv, K: (iuv, K * torch.tensor([[-1.0, 1, 1], [1, 1, 1], [1, 1, 1]])), "K"),  # fx < 0
])
def test_bad_input_raises_a_clear_error(fresh_init, mutate, field):
    iuv = torch.zeros(2, 20, 16, 3)
    iuv[:, 5:15, 4:12] = torch.tensor([3.0, 0.5, 0.5])
    K = torch.tensor([[30.0, 0, 7.5], [0, 30.0, 9.5], [0, 0, 1]]).expand(2, 3, 3).clone()
    bad_iuv, bad_K = mutate(iuv, K)
    with pytest.raises(ParameterError, match=field):
        fresh_init.predict_full(bad_iuv, bad_K)


# ---------------------------------------------------------------- weight files

def test_save_and_load_round_trip(tmp_path, fresh_init):
    path = save_danet(tmp_path / "w.pt", fresh_init.net, {"note": "test"})
    init, info = load_danet(path, with_info=True)
    assert info["note"] == "test"
    x = iuv_to_parts(_random_crops(n=2, r=64))
    a, b = fresh_init.predict_crop(x), init.predict_crop(x)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_danet(tmp_path / "bad.pt")
    torch.save({"format": "something else", "config": {}, "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="format"):
        load_danet(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_danet(tmp_path / "missing.pt")


def test_a_few_training_steps_run(body):
    from fitkit.init.danet_train import TrainConfig, train_danet

    model, charts = body
    net, history = train_danet(model, charts, TrainConfig(steps=3, samples=8, batch_size=4, warmup=0.3,
                                                          num_vertices=50), log=None)
    assert len(history["loss"]) >= 1 and all(math.isfinite(v) for v in history["loss"])
    assert set(history["parts"]) >= {"rot", "orient", "betas", "cam", "2d", "kp", "vert"}
    assert not net.training


def test_committed_weights_match_the_card_and_beat_the_mean_pose(body):
    from fitkit.init.danet_train import evaluate_danet

    card = CARD.read_text()
    m = re.search(r"sha-?256[^`]*`([0-9a-f]{64})`", card, flags=re.IGNORECASE)
    assert m, f"{CARD} names no SHA-256"
    assert file_sha256(WEIGHTS) == m.group(1)
    assert WEIGHTS.stat().st_size < 3.2e6
    init = load_danet()  # the default path
    model, charts = body
    result = evaluate_danet(init, n=8, seed=777, drop_rates=(0.0,), model=model, charts=charts)
    rows = result["rows"]
    assert rows["danet_drop_0"]["pve"] < 0.8 * rows["mean_init"]["pve"], rows
