"""PointRig against BodyModel.forward (points) and autograd through BodyModel.forward (Jacobians)."""
import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.body.keypoint_sets import KeypointSet
from fitkit.body.model import BodyModel
from fitkit.body.points import PointRig, right_jacobian_so3
from fitkit.body.synthetic import synthetic_keypoint_set, synthetic_smpl_arrays
from fitkit.errors import ParameterError

# first use of forward-mode AD makes torch script its own decompositions
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

V = 300
VERTS = [5, 17, 5, 299, 0]  # any order, a duplicate
F64 = torch.float64


def _odd_keypoints(num_vertices: int, num_joints: int = 24) -> KeypointSet:
    """Weights that do not sum to one (and a negative one): translation is not plain identity."""
    dense = np.zeros((3, num_vertices))
    dense[0, [3, 9]] = [0.25, 0.25]
    dense[1, [4, 40, 41]] = [0.8, -0.2, 0.6]
    jw = np.zeros((3, num_joints))
    jw[1, 7] = 0.5
    jw[2, [0, 20]] = [1.5, -0.25]
    return KeypointSet.from_dense("odd", ["a", "b", "c"], dense, jw)


def synthetic_model(correctives=True, dtype=F64):
    sets = {"syn": synthetic_keypoint_set(V, num_keypoints=25, seed=2), "odd": _odd_keypoints(V)}
    return BodyModel(synthetic_smpl_arrays(V, pose_correctives=correctives, seed=1),
                     keypoint_sets=sets, dtype=dtype)


@pytest.fixture(scope="module")
def syn():
    return synthetic_model(True)


@pytest.fixture(scope="module")
def syn_plain():
    return synthetic_model(False)


@pytest.fixture(scope="module")
def open_body():
    return load_body_model("open", dtype=F64)


def random_rotvecs(g, n, max_angle, dtype):
    axis = torch.randn(n, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    return (axis * torch.rand(n, 1, generator=g, dtype=F64) * max_angle).to(dtype)


def make_params(model, batch=3, pose="random", seed=0, dtype=None):
    """Angles up to 1.5 rad (root up to 3); 'zero' is the exact rest pose; 'mixed' puts some
    joints at exactly zero and some at tiny angles, for the small-angle branches."""
    dtype = dtype or model.dtype
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    go = random_rotvecs(g, batch, 3.0, dtype)
    bp = random_rotvecs(g, batch * (J - 1), 1.5, dtype).reshape(batch, -1)
    if pose == "zero":
        go, bp = torch.zeros_like(go), torch.zeros_like(bp)
    elif pose == "mixed":
        bp = bp.reshape(batch, J - 1, 3)
        bp[:, ::3] = 0.0
        bp[:, 1::3] *= 1e-6
        bp = bp.reshape(batch, -1)
        go[0] = 0.0
    return dict(global_orient=go, body_pose=bp,
                betas=(torch.randn(batch, model.num_betas, generator=g, dtype=F64) * 2).to(dtype),
                transl=torch.randn(batch, 3, generator=g, dtype=F64).to(dtype))


def reference_points(model, params, keypoints=None, joints=False, vertices=None, validate=True):
    out = model(**params, keypoints=keypoints, vertices=vertices, validate=validate)
    parts = []
    if keypoints is not None:
        parts.append(out.keypoints)
    if joints:
        parts.append(out.joints)
    if vertices is not None:
        parts.append(out.vertices)
    return torch.cat(parts, dim=1)


def autograd_jacobian(model, params, **selection):
    """(B, P, 3, D): each sample's Jacobian of BodyModel.forward, by forward-mode autodiff."""
    J, nb = model.num_joints, model.num_betas
    flat = torch.cat([params["global_orient"], params["body_pose"], params["betas"], params["transl"]], dim=1)
    cuts = [3, 3 * J, 3 * J + nb]

    def one_sample(x):  # (D,) -> (P, 3)
        x = x[None]
        go, bp, be, tr = x[:, : cuts[0]], x[:, cuts[0]: cuts[1]], x[:, cuts[1]: cuts[2]], x[:, cuts[2]:]
        p = dict(global_orient=go, body_pose=bp, betas=be, transl=tr)
        return reference_points(model, p, validate=False, **selection)[0]

    return torch.func.vmap(torch.func.jacfwd(one_sample))(flat)


# ---------------------------------------------------------------- points
@pytest.mark.parametrize("pose", ["random", "zero", "mixed"])
@pytest.mark.parametrize("correctives", [True, False])
def test_points_match_body_model_synthetic(syn, syn_plain, correctives, pose):
    model = syn if correctives else syn_plain
    sel = dict(keypoints="syn", joints=True, vertices=VERTS)
    rig = PointRig(model, **sel)
    assert rig.slices == {"keypoints": slice(0, 25), "joints": slice(25, 49), "vertices": slice(49, 54)}
    p = make_params(model, pose=pose)
    ref = reference_points(model, p, **sel)
    torch.testing.assert_close(rig(**p), ref, atol=1e-10, rtol=0)
    points, _ = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(points, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("pose", ["random", "zero"])
def test_points_match_body_model_open_body(open_body, pose):
    sel = dict(keypoints="body25", joints=True, vertices=[10, 13717, 4000, 10])
    rig = PointRig(open_body, **sel)
    p = make_params(open_body, pose=pose, seed=3)
    ref = reference_points(open_body, p, **sel)
    torch.testing.assert_close(rig(**p), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(rig.forward_with_jacobian(**p)[0], ref, atol=1e-10, rtol=0)


def test_full_mesh_open_body(open_body):
    rig = PointRig(open_body, vertices="all")
    assert rig.num_points == open_body.num_vertices
    p = make_params(open_body, batch=1, seed=4)
    ref = open_body(**p, vertices="all").vertices
    torch.testing.assert_close(rig(**p), ref, atol=1e-10, rtol=0)
    points, jac = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(points, ref, atol=1e-10, rtol=0)
    assert jac.shape == (1, open_body.num_vertices, 3, rig.num_params)


@pytest.mark.parametrize("model_name", ["synthetic", "open"])
def test_float32_points(model_name):
    if model_name == "open":
        model, sel = load_body_model("open"), dict(keypoints="body25", joints=True)
    else:
        model, sel = synthetic_model(True, torch.float32), dict(keypoints="syn", joints=True, vertices=VERTS)
    rig = PointRig(model, **sel)
    p = make_params(model, seed=5)
    ref = reference_points(model, p, **sel)
    assert rig(**p).dtype == torch.float32
    torch.testing.assert_close(rig(**p), ref, atol=2e-5, rtol=0)
    points, jac = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(points, ref, atol=2e-5, rtol=0)
    assert jac.dtype == torch.float32
    model64 = model.to(F64)
    p64 = {k: v.to(F64) for k, v in p.items()}
    torch.testing.assert_close(jac.to(F64), autograd_jacobian(model64, p64, **sel), atol=2e-5, rtol=0)
    # a rig moves like any module (its tables were rounded to float32 once: ~1e-8 m)
    rig64 = rig.to(F64)
    assert rig64.dtype == F64
    torch.testing.assert_close(rig64(**p64), reference_points(model64, p64, **sel), atol=1e-6, rtol=0)


def test_keypoint_alias_and_partial_selection(open_body):
    rig = PointRig(open_body, keypoints="openpose")  # alias of body25
    assert rig.keypoint_set == "body25" and rig.slices == {"keypoints": slice(0, 25)}
    rig = PointRig(open_body, joints=True)
    assert rig.slices == {"joints": slice(0, 24)} and rig.num_points == 24
    p = make_params(open_body, seed=6)
    torch.testing.assert_close(rig(**p), open_body(**p).joints, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- Jacobians
@pytest.mark.parametrize("pose", ["random", "zero", "mixed"])
@pytest.mark.parametrize("correctives", [True, False])
def test_jacobian_matches_autograd_synthetic(syn, syn_plain, correctives, pose):
    model = syn if correctives else syn_plain
    sel = dict(keypoints="syn", joints=True, vertices=VERTS)
    rig = PointRig(model, **sel)
    p = make_params(model, pose=pose, seed=7)
    _, jac = rig.forward_with_jacobian(**p)
    ref = autograd_jacobian(model, p, **sel)
    assert jac.shape == ref.shape == (3, 54, 3, rig.num_params)
    for name, cols in rig.param_slices.items():
        torch.testing.assert_close(jac[..., cols], ref[..., cols], atol=1e-8, rtol=0, msg=name)


@pytest.mark.parametrize("correctives", [True, False])
def test_jacobian_unnormalized_keypoints(syn, syn_plain, correctives):
    model = syn if correctives else syn_plain
    rig = PointRig(model, keypoints="odd")
    p = make_params(model, seed=8)
    points, jac = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(points, reference_points(model, p, keypoints="odd"), atol=1e-10, rtol=0)
    torch.testing.assert_close(jac, autograd_jacobian(model, p, keypoints="odd"), atol=1e-8, rtol=0)
    torch.testing.assert_close(jac[0, :, 0, rig.param_slices["transl"].start],
                               torch.tensor([0.5, 1.7, 1.25], dtype=F64), atol=1e-7, rtol=0)


def test_jacobian_full_mesh_synthetic(syn):
    rig = PointRig(syn, vertices="all")
    p = make_params(syn, batch=2, seed=9)
    _, jac = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(jac, autograd_jacobian(syn, p, vertices="all"), atol=1e-8, rtol=0)


@pytest.mark.parametrize("pose", ["random", "zero"])
def test_jacobian_matches_autograd_open_body(open_body, pose):
    sel = dict(keypoints="body25", joints=True)
    rig = PointRig(open_body, **sel)
    p = make_params(open_body, batch=2, pose=pose, seed=10)
    _, jac = rig.forward_with_jacobian(**p)
    torch.testing.assert_close(jac, autograd_jacobian(open_body, p, **sel), atol=1e-8, rtol=0)


def test_forward_is_differentiable(syn):
    rig = PointRig(syn, keypoints="syn", joints=True)
    p = {k: v.requires_grad_() for k, v in make_params(syn, batch=2, seed=11).items()}
    weights = torch.randn(2, rig.num_points, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    (rig(**p) * weights).sum().backward()
    _, jac = rig.forward_with_jacobian(**p)
    grads = torch.cat([p[k].grad for k in ("global_orient", "body_pose", "betas", "transl")], dim=1)
    torch.testing.assert_close(grads, torch.einsum("bpc,bpcd->bd", weights, jac), atol=1e-10, rtol=0)
    assert not jac.requires_grad


def test_short_and_shared_betas(syn):
    rig = PointRig(syn, keypoints="syn")
    p = make_params(syn, seed=12)
    for betas in (p["betas"][:, :4], p["betas"][:1, :4]):
        q = dict(p, betas=betas)
        ref = reference_points(syn, q, keypoints="syn")
        torch.testing.assert_close(rig(**q), ref, atol=1e-10, rtol=0)
        padded = torch.nn.functional.pad(betas, (0, syn.num_betas - 4)).expand(3, -1)
        _, jac = rig.forward_with_jacobian(**q)
        torch.testing.assert_close(jac, rig.forward_with_jacobian(**dict(p, betas=padded))[1])


def test_no_transl_is_zero_transl(syn):
    rig = PointRig(syn, keypoints="syn", joints=True)
    p = make_params(syn, seed=13)
    zero = dict(p, transl=torch.zeros_like(p["transl"]))
    torch.testing.assert_close(rig(**dict(p, transl=None)), rig(**zero), atol=0, rtol=0)
    a, b = rig.forward_with_jacobian(**dict(p, transl=None)), rig.forward_with_jacobian(**zero)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_sizes(syn):
    rig = PointRig(syn, keypoints="syn", vertices=VERTS)
    J, nb = syn.num_joints, syn.num_betas
    assert rig.num_params == 3 + 3 * (J - 1) + nb + 3
    assert rig.param_slices == {"global_orient": slice(0, 3), "body_pose": slice(3, 72),
                                "betas": slice(72, 82), "transl": slice(82, 85)}
    assert rig.slices == {"keypoints": slice(0, 25), "vertices": slice(25, 30)}
    assert rig.num_points == 30 and rig.num_sources > 0


# ---------------------------------------------------------------- rotations
def test_right_jacobian_matches_finite_differences():
    from scipy.spatial.transform import Rotation

    g = torch.Generator().manual_seed(14)
    angles = torch.tensor([0.0, 1e-7, 1e-3, 0.0999, 0.1001, 0.5, 1.5, 3.0], dtype=F64)
    axes = torch.randn(len(angles), 3, generator=g, dtype=F64)
    r = axes / axes.norm(dim=1, keepdim=True) * angles[:, None]
    jr = right_jacobian_so3(r).numpy()
    eps = 1e-6
    for k in range(len(angles)):
        base = Rotation.from_rotvec(r[k].numpy())
        for a in range(3):
            d = np.zeros(3)
            d[a] = eps
            plus = (base.inv() * Rotation.from_rotvec(r[k].numpy() + d)).as_rotvec()
            minus = (base.inv() * Rotation.from_rotvec(r[k].numpy() - d)).as_rotvec()
            np.testing.assert_allclose((plus - minus) / (2 * eps), jr[k, :, a], atol=1e-8)
    np.testing.assert_allclose(jr[0], np.eye(3), atol=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("arg, value, pattern", [
    ("global_orient", torch.zeros(2, 4, dtype=F64), r"global_orient.*\(B, 3\)"),
    ("body_pose", torch.zeros(2, 68, dtype=F64), r"body_pose.*\(B, 69\)"),
    ("betas", torch.zeros(2, 11, dtype=F64), r"betas.*k<=10"),
    ("transl", torch.zeros(3, 3, dtype=F64), r"transl.*B=2"),
    ("transl", torch.zeros(2, 3, 1, dtype=F64), r"transl.*shape"),
    ("body_pose", np.zeros((2, 69)), r"body_pose.*tensor"),
    ("betas", torch.zeros(2, 10, dtype=torch.float32), r"betas.*dtype"),
    ("global_orient", torch.full((2, 3), float("nan"), dtype=F64), r"global_orient.*NaN"),
])
def test_bad_parameters_name_the_argument(syn, arg, value, pattern):
    rig = PointRig(syn, keypoints="syn")
    p = make_params(syn, batch=2)
    p[arg] = value
    for call in (rig, rig.forward_with_jacobian):
        with pytest.raises(ParameterError, match=pattern):
            call(**p)


def test_bad_selection_names_the_argument(syn):
    with pytest.raises(ParameterError, match="keypoints.*'nope'"):
        PointRig(syn, keypoints="nope")
    with pytest.raises(ParameterError, match="vertices"):
        PointRig(syn, vertices=[0, V])
    with pytest.raises(ParameterError, match="vertices"):
        PointRig(syn, vertices="some")
    with pytest.raises(ParameterError, match="at least one point"):
        PointRig(syn, vertices=[])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(syn):
    sel = dict(keypoints="syn", joints=True, vertices=VERTS)
    rig, rig_cuda = PointRig(syn, **sel), PointRig(syn.to("cuda"), **sel)
    syn.to("cpu")
    p = make_params(syn, seed=15)
    ref_points, ref_jac = rig.forward_with_jacobian(**p)
    points, jac = rig_cuda.forward_with_jacobian(**{k: v.cuda() for k, v in p.items()})
    torch.testing.assert_close(points.cpu(), ref_points, atol=1e-10, rtol=0)
    torch.testing.assert_close(jac.cpu(), ref_jac, atol=1e-10, rtol=0)
    torch.testing.assert_close(rig_cuda(**{k: v.cuda() for k, v in p.items()}).cpu(), ref_points,
                               atol=1e-10, rtol=0)
