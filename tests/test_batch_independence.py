"""A frame's fit does not depend on the frames fitted with it (docs/fitting.md, "Batch independence").

The same 24 synthetic frames are fitted with a small two-stage recipe like the
demo's (camera stage on the torso, then the whole body against robust
keypoints, the open GMM pose prior and a shape prior), both stages with the
solver under test, in batches of 24, 8 and 1, in another order, and next to a
corrupted frame (NaN keypoints, 1e6-pixel keypoints, all confidences zero).
Every untouched frame's parameters must be bit-identical to its fit in the
batch of 24, and the corrupted frame must carry the right flag.
"""
from __future__ import annotations

import copy

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe, recipe_from_dict

NAMES = ("global_orient", "body_pose", "betas", "transl")
SOLVERS = ("adam", "lbfgs", "lm")
N = 24


def small_recipe(solver: str, prior: str | None = None, mode: str | None = None):
    data = copy.deepcopy(load_recipe("demo", prior=prior).data)
    for st, iters in zip(data["stages"], (4, 8)):
        st["solver"] = {"type": solver, "iterations": iters}
    if mode is not None:
        data["terms"]["pose"]["mode"] = mode
    return recipe_from_dict(data, source=f"small demo recipe with {solver}, pose prior {prior} {mode}")


class Case:
    """Model, frames and recipe of one (solver, dtype), with the batch-of-24 fit as reference."""

    def __init__(self, solver: str, dtype: torch.dtype, prior: str | None = None, mode: str | None = None,
                 frames: int = N):
        self.model = load_body_model("open", num_betas=10, dtype=dtype)
        self.ex = make_keypoint_example(self.model, frames, noise_px=2.0, seed=11)
        self.recipe = small_recipe(solver, prior, mode)
        self.reference = self.fit(list(range(frames)))

    def fit(self, rows, corrupt: str | None = None, at: int = 0):
        """Fit frames ``rows`` in one batch; with ``corrupt``, frame ``rows[at]`` is
        broken that way (NaN or 1e6 pixel coordinates, or all confidences zero)."""
        idx = torch.as_tensor(rows)
        obs = self.ex.observations.subset(idx)
        if corrupt is not None:
            kps = obs.keypoints.clone()
            if corrupt == "nan":
                kps[at, :, :2] = float("nan")
            elif corrupt == "1e6":
                kps[at, :, :2] = 1e6
            else:
                kps[at, :, 2] = 0.0
            obs.keypoints = kps
        return fit(self.model, obs, self.recipe, {k: v[idx] for k, v in self.ex.init.items()})

    def assert_same(self, res, rows, positions=None):
        """Frames ``rows`` of the reference equal ``res``'s rows ``positions`` bit for bit."""
        positions = list(range(len(rows))) if positions is None else positions
        for name in NAMES:
            got = res.params[name][positions]
            want = self.reference.params[name][rows]
            assert torch.equal(got, want), f"{name}: max difference {float((got - want).abs().max()):.3g}"
        for key, energy in self.reference.energies.items():
            assert torch.equal(res.energies[key][positions], energy[rows]), key
        assert torch.equal(res.converged[positions], self.reference.converged[rows])
        assert torch.equal(res.iterations[positions], self.reference.iterations[rows])


_CASES: dict = {}


def case(solver: str, dtype=torch.float32, prior: str | None = None, mode: str | None = None,
         frames: int = N) -> Case:
    key = (solver, dtype, prior, mode, frames)
    if key not in _CASES:
        _CASES[key] = Case(solver, dtype, prior, mode, frames)
    return _CASES[key]


@pytest.mark.parametrize("solver", SOLVERS)
def test_batch_size_does_not_change_a_frame(solver):
    c = case(solver)
    assert not c.reference.nan.any() and not c.reference.no_evidence.any()
    for start in range(0, N, 8):
        rows = list(range(start, start + 8))
        c.assert_same(c.fit(rows), rows)
    for row in (0, 13, 23):  # alone
        c.assert_same(c.fit([row]), [row])


@pytest.mark.parametrize("solver", SOLVERS)
def test_order_does_not_change_a_frame(solver):
    c = case(solver)
    rows = [17, 3, 22, 9, 0, 12, 5, 20, 1, 14]
    c.assert_same(c.fit(rows), rows)


@pytest.mark.parametrize("corrupt", ["nan", "1e6", "zero_conf"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_a_corrupted_neighbour_does_not_change_a_frame(solver, corrupt):
    c = case(solver)
    rows = [8, 9, 10, 0, 11, 12, 13, 14, 15]  # frame 0, broken, among 8..15
    res = c.fit(rows, corrupt=corrupt, at=3)
    keep = [i for i in range(len(rows)) if i != 3]
    c.assert_same(res, [rows[i] for i in keep], positions=keep)
    # the broken frame is flagged as what it is, and never as converged
    assert not bool(res.converged[3])
    if corrupt == "nan":
        assert bool(res.nan[3])
    elif corrupt == "zero_conf":
        assert bool(res.no_evidence[3]) and not bool(res.nan[3])
    for name in NAMES:
        assert torch.isfinite(res.params[name]).all(), name


@pytest.mark.parametrize("solver", SOLVERS)
def test_float64_also_bit_identical(solver):
    c = case(solver, torch.float64)
    rows = list(range(4, 12))
    c.assert_same(c.fit(rows), rows)
    rows = [4, 5, 6, 7, 8, 20, 9, 10, 11]  # frame 20, broken, among 4..11
    res = c.fit(rows, corrupt="nan", at=5)
    keep = [i for i in range(len(rows)) if i != 5]
    c.assert_same(res, [rows[i] for i in keep], positions=keep)
    assert bool(res.nan[5])


def test_keypoint_bound_of_the_converged_flag():
    from fitkit.fitting.camera_setup import build_fit_camera
    from fitkit.fitting.engine import keypoints_within_bound

    model = load_body_model("open", num_betas=10, dtype=torch.float64)
    ex = make_keypoint_example(model, 4, noise_px=2.0, seed=5)
    obs = ex.observations.to(dtype=torch.float64)
    camera = build_fit_camera({"mode": "full"}, obs, dtype=torch.float64, device="cpu")
    gt = {k: ex.gt[k].double() for k in NAMES}
    assert keypoints_within_bound(model, gt, obs, camera).all()  # the true bodies: a few pixels of noise
    kps = obs.keypoints.clone()
    used = kps[..., 2] > 0
    side = (kps[1, used[1], :2].amax(0) - kps[1, used[1], :2].amin(0)).max()
    kps[1, :, 0] += 1.3 * float(side)  # every keypoint of frame 1 moved by more than the person's box
    kps[2, :, :2] = 1e6  # frame 2: beyond the image diagonal too
    kps[3, :, 2] = 0.0  # frame 3: nothing observed, nothing to hold against the fit
    obs.keypoints = kps
    assert keypoints_within_bound(model, gt, obs, camera).tolist() == [True, False, False, True]


# ---------------------------------------------------------------------------------------
# Network priors: VPoser and the conditional flow, evaluated on fixed blocks of rows
# (fitkit.priors.row_blocks)

PRIOR_MODES = [("vposer", "encoder"), ("vposer", "latent"), ("cnf", "nll"), ("cnf", "latent")]
#: Frames of the network priors' reference batch: more than one block of ROW_BLOCK (32) rows.
PRIOR_FRAMES = 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("prior,mode", PRIOR_MODES)
def test_network_priors_batch_size_and_broken_neighbour(prior, mode, dtype):
    c = case("lbfgs", dtype, prior, mode, frames=PRIOR_FRAMES)
    assert not c.reference.nan.any()
    rows = list(range(8, 16))
    c.assert_same(c.fit(rows), rows)
    c.assert_same(c.fit([13]), [13])
    rows = list(range(28, 40))  # across the reference's two blocks
    c.assert_same(c.fit(rows), rows)
    rows = [8, 9, 10, 0, 11, 12, 13, 14, 15]  # frame 0, NaN keypoints, among 8..15
    res = c.fit(rows, corrupt="nan", at=3)
    keep = [i for i in range(len(rows)) if i != 3]
    c.assert_same(res, [rows[i] for i in keep], positions=keep)
    assert bool(res.nan[3]) and not bool(res.converged[3])


def test_vposer_encoder_with_lm_bit_identical():
    """LM pushes the encoder forward along every parameter direction (torch.func.jvp under vmap)."""
    c = case("lm", torch.float32, "vposer", "encoder", frames=PRIOR_FRAMES)
    rows = list(range(16, 24)) + [35]
    c.assert_same(c.fit(rows), rows)
    c.assert_same(c.fit([20]), [20])


def _network_maps(dtype):
    """name -> (f(x, c) -> tensor, input width) for each way a fit evaluates the shipped networks."""
    from fitkit.priors.cnf import load_flow
    from fitkit.priors.row_blocks import frozen_block_copy
    from fitkit.priors.vposer import load_vposer

    vp = frozen_block_copy({}, load_vposer("priors/open_vposer.pt"), "cpu", dtype)
    flow = frozen_block_copy({}, load_flow("priors/open_cnf.pt"), "cpu", dtype)
    return {"vposer encoder": (lambda x, c: vp.encode_mean(x), 63),
            "vposer decoder": (lambda z, c: vp.decode_axis_angle(z), vp.latent_dim),
            "cnf to_latent": (lambda x, c: flow.to_latent(x, c), flow.dim),
            "cnf from_latent": (lambda z, c: flow.from_latent(z, c), flow.dim),
            "cnf log_prob": (lambda x, c: flow.log_prob(x, c), flow.dim)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_place_inside_a_block_does_not_matter(dtype):
    """The same row at every place of a ROW_BLOCK-row block, beside random rows: the same
    output and the same input gradient, bit for bit (float64 needs the zero column of odd widths)."""
    from fitkit.priors.row_blocks import ROW_BLOCK

    gen = torch.Generator().manual_seed(3)
    for name, (f, width) in _network_maps(dtype).items():
        row = 0.3 * torch.randn(width, generator=gen, dtype=dtype)
        ctx = torch.randn(39, generator=gen, dtype=dtype)
        outs, grads = [], []
        for place in range(ROW_BLOCK):
            x = 0.3 * torch.randn(ROW_BLOCK, width, generator=gen, dtype=dtype)
            c = torch.randn(ROW_BLOCK, 39, generator=gen, dtype=dtype)
            x[place], c[place] = row, ctx
            x.requires_grad_(True)
            y = f(x, c)
            w = torch.randn(y.shape, generator=gen, dtype=dtype)
            w[place] = torch.linspace(-1, 1, y[place].numel(), dtype=dtype).reshape(y[place].shape)
            (g,) = torch.autograd.grad((y * w).sum(), x)
            outs.append(y[place].detach())
            grads.append(g[place])
        for place in range(1, ROW_BLOCK):
            assert torch.equal(outs[place], outs[0]), (name, place)
            assert torch.equal(grads[place], grads[0]), (name, place)


def test_in_row_blocks_is_the_same_computation():
    """Blocks change the rounding only: float64 outputs and gradients of the shipped priors'
    terms match the plain networks on the whole batch to 1e-12 (relative where the values are
large, e.g. log-densities; gradients relative to their largest entry)."""
    from fitkit.priors.cnf import load_flow
    from fitkit.priors.row_blocks import block_linear_layers, in_row_blocks
    from fitkit.priors.vposer import load_vposer

    gen = torch.Generator().manual_seed(4)
    vp = load_vposer("priors/open_vposer.pt").double()
    flow = load_flow("priors/open_cnf.pt").double()
    plain = {"encoder": (vp.encode_mean, 63), "decoder": (vp.decode_axis_angle, vp.latent_dim),
             "to_latent": (flow.to_latent, flow.dim), "from_latent": (flow.from_latent, flow.dim),
             "log_prob": (flow.log_prob, flow.dim)}
    aligned_vp = block_linear_layers(load_vposer("priors/open_vposer.pt").double())
    aligned_flow = block_linear_layers(load_flow("priors/open_cnf.pt").double())
    aligned = {"encoder": aligned_vp.encode_mean, "decoder": aligned_vp.decode_axis_angle,
               "to_latent": aligned_flow.to_latent, "from_latent": aligned_flow.from_latent,
               "log_prob": aligned_flow.log_prob}
    for n in (1, 5, 32, 45):
        for name, (f, width) in plain.items():
            x = (0.3 * torch.randn(n, width, generator=gen, dtype=torch.float64)).requires_grad_(True)
            args = (x,) if name in ("encoder", "decoder") else (x, torch.randn(n, 39, generator=gen,
                                                                                dtype=torch.float64))
            want = f(*args)
            (g_want,) = torch.autograd.grad(want.square().sum(), x)
            got = in_row_blocks(aligned[name], *args, block=8)
            (g_got,) = torch.autograd.grad(got.square().sum(), x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            # gradients: relative to their largest entry (single entries may cancel)
            assert float((g_got - g_want).abs().max()) <= 1e-12 * float(g_want.abs().max()), name


def test_in_row_blocks_pieces():
    from fitkit.priors.row_blocks import in_row_blocks

    seen = []

    def fn(a, b, none):
        seen.append((a.shape[0], b.shape[0], none))
        return a * 2, (a + b).sum(1)

    a = torch.arange(10.0).reshape(5, 2).requires_grad_(True)
    b = torch.ones(5, 2)
    doubled, sums = in_row_blocks(fn, a, b, None, block=4)
    assert seen == [(8, 8, None)]  # 5 rows padded to 8 with copies of the last one
    assert torch.equal(doubled, a * 2) and torch.equal(sums, (a + b).sum(1))
    (g,) = torch.autograd.grad(doubled.sum() + sums.sum(), a)
    assert torch.equal(g, torch.full((5, 2), 3.0))  # the filler copies of row 4 add nothing
    with pytest.raises(ValueError, match="one number of rows"):
        in_row_blocks(fn, a, torch.ones(4, 2), None)
    with pytest.raises(ValueError, match="block"):
        in_row_blocks(fn, a, b, None, block=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_blocked_linear_rows_do_not_depend_on_the_batch(dtype):
    """A row of blocked_linear is bit-identical in batches of 1, 5, 32, 40 and 100 (plain
    F.linear is not), and equals F.linear to rounding; the gradient too."""
    from fitkit.priors.row_blocks import blocked_linear

    gen = torch.Generator().manual_seed(5)
    for k in (63, 64):
        w = torch.randn(512, k, generator=gen, dtype=dtype) / k ** 0.5
        bias = torch.randn(512, generator=gen, dtype=dtype)
        x = torch.randn(100, k, generator=gen, dtype=dtype, requires_grad=True)
        full = blocked_linear(x, w, bias)
        (g_full,) = torch.autograd.grad(full.square().sum(), x)
        tol = 1e-4 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(full, torch.nn.functional.linear(x, w, bias), rtol=tol, atol=tol)
        for n in (1, 5, 32, 40):
            part = blocked_linear(x[:n], w, bias)
            (g,) = torch.autograd.grad(part.square().sum(), x)
            assert torch.equal(part, full[:n]), (k, n)
            assert torch.equal(g[:n], g_full[:n]) and not g[n:].any(), (k, n)
