"""Tests of fitkit.eval.benchmark: the seeded, versioned synthetic benchmark."""

import json

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.errors import ParameterError
from fitkit.eval.benchmark import (BENCHMARK_VERSION, CUE_NOISE, DIFFICULTY, SWAP_PAIRS, Benchmark,
                                   BenchmarkFileError, init_errors, load_benchmark, make_benchmark)
from fitkit.io.params import load_params

SIZE = (128, 112)  # (width, height): not square, to catch axis mix-ups


@pytest.fixture(scope="module")
def model():
    return load_body_model("open")


@pytest.fixture(scope="module")
def bench(model):
    return make_benchmark(model, 6, seed=3, image_size=SIZE)


def _arrays(b: Benchmark) -> dict:
    out = {"keypoints": b.observations.keypoints, "intrinsics": b.observations.intrinsics,
           "image_size": b.observations.image_size}
    out.update({"dense_" + k: v for k, v in b.observations.dense.items()})
    out.update({"gt_" + k: v for k, v in b.gt.items()})
    out.update({"init_" + k: v for k, v in b.init.items()})
    out.update({"truth_" + k: v for k, v in b.truth.items()})
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(torch.nan_to_num(a, nan=-7.0),
                                                                          torch.nan_to_num(b, nan=-7.0)))


def test_shapes_and_settings(bench, model):
    n, (w, h) = 6, SIZE
    obs = bench.observations
    assert len(bench) == n and obs.keypoints.shape == (n, 25, 3) and obs.keypoint_format == "body25"
    assert obs.dense["iuv"].shape == (n, h, w, 3) and obs.dense["displacements"].shape == (n, h, w, 2)
    assert bench.gt["body_pose"].shape == (n, 69) and bench.init["betas"].shape == bench.gt["betas"].shape
    s = bench.settings
    assert s["version"] == BENCHMARK_VERSION and s["seed"] == 3 and s["difficulty"] == "medium"
    assert s["difficulty_numbers"] == DIFFICULTY["medium"] and s["cue_noise"] == CUE_NOISE
    assert len(set(s["pose_indices"])) == n  # distinct held-out frames
    assert json.loads(json.dumps(s)) == s
    iuv = obs.dense["iuv"]
    assert float(iuv[..., 0].min()) >= 0 and float(iuv[..., 0].max()) <= 24
    assert float(iuv[..., 1:].min()) >= 0 and float(iuv[..., 1:].max()) <= 1


def test_seeded_determinism(bench, model):
    again = make_benchmark(model, 6, seed=3, image_size=SIZE)
    a, b = _arrays(bench), _arrays(again)
    assert a.keys() == b.keys()
    for k in a:
        assert _same(a[k], b[k]), k
    assert again.settings == bench.settings
    other = make_benchmark(model, 6, seed=4, image_size=SIZE)
    c = _arrays(other)
    for k in ("keypoints", "dense_iuv", "gt_body_pose", "init_body_pose", "init_transl"):
        assert not _same(a[k], c[k]), k


def test_save_load_round_trip(bench, tmp_path):
    folder = bench.save(tmp_path / "b")
    assert sorted(p.name for p in folder.iterdir()) == ["gt.npz", "init.npz", "observations.npz",
                                                        "settings.json"]
    loaded = load_benchmark(folder)
    a, b = _arrays(bench), _arrays(loaded)
    assert a.keys() == b.keys()
    for k in a:
        assert _same(a[k], b[k]), k
    assert loaded.settings == bench.settings
    assert loaded.observations.frame_ids == bench.observations.frame_ids
    # the parameter files are plain init files
    params = load_params(folder / "init.npz")
    np.testing.assert_array_equal(params["body_pose"], bench.init["body_pose"].numpy())
    assert set(load_params(folder / "gt.npz")) == {"global_orient", "body_pose", "betas", "transl"}


def test_load_errors_name_the_file(bench, tmp_path):
    folder = bench.save(tmp_path / "b")
    settings = json.loads((folder / "settings.json").read_text())
    settings["version"] = BENCHMARK_VERSION + 1
    (folder / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(BenchmarkFileError, match=r"settings\.json.*version"):
        load_benchmark(folder)

    folder = bench.save(tmp_path / "c")
    with np.load(folder / "gt.npz") as z:
        entries = {k: z[k] for k in z.files}
    entries["benchmark_version"] = np.array(BENCHMARK_VERSION + 1)
    np.savez(folder / "gt.npz", **entries)
    with pytest.raises(BenchmarkFileError, match=r"gt\.npz.*version"):
        load_benchmark(folder)

    folder = bench.save(tmp_path / "d")
    (folder / "init.npz").unlink()
    with pytest.raises(BenchmarkFileError, match=r"init\.npz.*not found"):
        load_benchmark(folder)
    with pytest.raises(BenchmarkFileError, match="not found"):
        load_benchmark(tmp_path / "nowhere")


def test_bad_arguments(model):
    with pytest.raises(ParameterError, match="difficulty"):
        make_benchmark(model, 2, difficulty="extreme")
    with pytest.raises(ParameterError, match="cues"):
        make_benchmark(model, 2, cues=("keypoints", "depth"))
    with pytest.raises(ParameterError, match="cue_noise"):
        make_benchmark(model, 2, cue_noise={"nope": 1.0})


def test_difficulty_orders_init_errors(model):
    means = {}
    for level in ("easy", "medium", "hard"):
        b = make_benchmark(model, 16, difficulty=level, seed=0, cues=("keypoints",))
        err = init_errors(model, b)
        means[level] = {k: float(v.mean()) for k, v in err.items()}
    for metric in ("mpjpe", "pve", "depth_err"):
        assert means["easy"][metric] < means["medium"][metric] < means["hard"][metric], (metric, means)


def test_init_keeps_pelvis_projection(model):
    b = make_benchmark(model, 8, difficulty="hard", seed=1, cues=("keypoints",))
    K = b.observations.intrinsics.double()
    with torch.no_grad():
        pg = model(*(b.gt[k] for k in ("global_orient", "body_pose", "betas", "transl"))).joints[:, 0].double()
        pi = model(*(b.init[k] for k in ("global_orient", "body_pose", "betas", "transl"))).joints[:, 0].double()
    proj = lambda p: (K @ p[..., None])[..., 0][:, :2] / p[:, 2:]  # noqa: E731
    assert float((proj(pg) - proj(pi)).abs().max()) < 0.05  # pixels
    rel = pi[:, 2] / pg[:, 2] - 1
    lim = DIFFICULTY["hard"]["depth_rel"]
    assert float(rel.abs().max()) <= lim + 1e-3 and float(rel.abs().max()) > 0.2 * lim


def _jitter(model, size, seed=5):
    b = make_benchmark(model, 64, seed=seed, image_size=(size, size), cues=("keypoints",),
                       cue_noise={"drop_max": 0.0, "swap_prob": 0.0})
    d = b.observations.keypoints[..., :2].double() - b.truth["keypoints_2d_clean"].double()
    return d, b.truth["person_size"].double()


def test_keypoint_noise_scales_with_person_size(model):
    d_small, s_small = _jitter(model, 128)
    d_large, s_large = _jitter(model, 512)  # same seed: same bodies, 4x larger in pixels
    ratio = float(s_large.mean() / s_small.mean())
    assert 3.0 < ratio < 5.0
    std_small, std_large = float(d_small.std()), float(d_large.std())
    assert std_large / std_small == pytest.approx(ratio, rel=0.15)
    for d, s in ((d_small, s_small), (d_large, s_large)):  # relative jitter is the documented 1 %
        assert float((d / s[:, None, None]).std()) == pytest.approx(CUE_NOISE["jitter_rel"], rel=0.1)


def test_confidence_correlated_dropouts_and_swaps(model):
    b = make_benchmark(model, 64, seed=2, cues=("keypoints",), cue_noise={"swap_prob": 0.3})
    kp, t = b.observations.keypoints.double(), b.truth
    dropped, conf = t["keypoint_dropped"], t["keypoint_conf_drawn"].double()
    assert float(conf.min()) >= CUE_NOISE["conf_low"] and float(conf.max()) <= 1
    rate = float(dropped.double().mean())
    assert 0.5 * CUE_NOISE["drop_max"] / 2 < rate < 1.5 * CUE_NOISE["drop_max"] / 2  # ~12.5 %
    assert float(conf[dropped].mean()) < float(conf[~dropped].mean()) - 0.1
    # dropped keypoints are written (0, 0, 0), wherever a swap moved them
    assert int((kp[..., 2] == 0).sum()) == int(dropped.sum())
    assert bool((kp[kp[..., 2] == 0] == 0).all())
    swapped = t["swapped_pair"]
    assert 5 <= int((swapped >= 0).sum()) <= 35
    names = b.observations.format.names
    for i in torch.nonzero(swapped >= 0).flatten().tolist():
        a, c = (names.index(x) for x in SWAP_PAIRS[int(swapped[i])])
        for src, dst in ((a, c), (c, a)):
            if not dropped[i, src]:
                assert float(kp[i, dst, 2]) == pytest.approx(CUE_NOISE["swap_conf_factor"] * float(conf[i, src]),
                                                             rel=1e-5)
                clean = t["keypoints_2d_clean"][i, src].double()
                assert float((kp[i, dst, :2] - clean).norm()) < 6 * CUE_NOISE["jitter_rel"] * float(
                    t["person_size"][i]) + 1e-3


def test_iuv_part_errors_fraction(bench):
    iuv, t = bench.observations.dense["iuv"].double(), bench.truth
    clean = t["iuv_clean"].double()
    boundary, flipped = t["iuv_boundary"], t["iuv_flipped"]
    changed = iuv[..., 0] != clean[..., 0]
    assert torch.equal(changed, flipped) and not bool((flipped & ~boundary).any())
    assert int(boundary.sum()) > 500
    frac = float(flipped.sum() / boundary.sum())
    assert frac == pytest.approx(CUE_NOISE["part_flip"], abs=0.05)
    fg = clean[..., 0] > 0
    assert bool((iuv[changed][:, 0] > 0).all())  # a neighbouring *part*, never background
    assert torch.equal(iuv[~fg], clean[~fg])  # background untouched
    duv = (iuv[..., 1:] - clean[..., 1:])[fg]
    assert float(duv.std()) == pytest.approx(CUE_NOISE["uv_sigma"], rel=0.3)  # clipping shrinks it a bit


def test_displacements_nan_exactly_off_initial_body(bench, model):
    from fitkit.render.rasterizer import rasterize

    w, h = SIZE
    with torch.no_grad():
        v = model(*(bench.init[k] for k in ("global_orient", "body_pose", "betas", "transl")),
                  vertices="all").vertices
    mask = rasterize(v, model.faces, bench.observations.intrinsics.to(v), (h, w)).mask
    disp = bench.observations.dense["displacements"]
    assert mask.any()
    assert torch.equal(torch.isfinite(disp).all(-1), mask)
    assert torch.equal(torch.isnan(disp).all(-1), ~mask)
