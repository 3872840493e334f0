"""BodyModel and LBS against smplx (the oracle), finite differences and bad input."""
import numpy as np
import pytest
import smplx
import torch
from scipy.spatial.transform import Rotation

from fitkit.body.keypoint_sets import KeypointSet
from fitkit.body.lbs import axis_angle_to_matrix, forward_kinematics, skin_vertices
from fitkit.body.model import BodyModel
from fitkit.body.skeleton import SMPL_PARENTS
from fitkit.body.synthetic import synthetic_keypoint_set, synthetic_smpl_arrays
from fitkit.errors import ParameterError

V = 300
B = 4
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def arrays():
    a = synthetic_smpl_arrays(V, seed=1)
    # smplx stores its buffers through float32 (utils.to_np) whatever its dtype;
    # float32-representable arrays make its float64 mode exact.
    a = {k: v.astype(np.float32).astype(np.float64) if v.dtype.kind == "f" else v for k, v in a.items()}
    assert np.all(a["posedirs"] != 0)  # pose correctives really exercised
    return a


@pytest.fixture(scope="module")
def kps():
    return synthetic_keypoint_set(V, num_keypoints=25, seed=2)


def make_smplx(arrays, tmp_path, dtype):
    # With V=300 the default SMPL-H extra-joint vertex ids do not exist; the
    # extra joints are irrelevant here (we compare joints[:, :24]).
    return smplx.SMPL(
        model_path=str(tmp_path), data_struct=smplx.utils.Struct(**arrays), num_betas=10, dtype=dtype,
        vertex_ids=dict(nose=0, reye=1, leye=2, rear=3, lear=4), use_hands=False, use_feet_keypoints=False,
    )


def random_params(dtype, seed=0, batch=B, scale=0.6):
    g = torch.Generator().manual_seed(seed)
    return dict(
        global_orient=torch.randn(batch, 3, generator=g, dtype=dtype) * 1.5,
        body_pose=torch.randn(batch, 69, generator=g, dtype=dtype) * scale,
        betas=torch.randn(batch, 10, generator=g, dtype=dtype) * 2.0,
        transl=torch.randn(batch, 3, generator=g, dtype=dtype),
    )


def smplx_forward(ref, p):
    """smplx output; in float64 fed scipy's rotation matrices, because smplx's own
    Rodrigues adds 1e-8 to the rotation vector (an error of ~1e-8 m)."""
    if p["global_orient"].dtype == torch.float32:
        return ref(**p)
    rot = Rotation.from_rotvec(torch.cat([p["global_orient"], p["body_pose"]], 1).reshape(-1, 3).numpy())
    mats = torch.from_numpy(rot.as_matrix()).reshape(B, -1, 9)
    return ref(global_orient=mats[:, :1], body_pose=mats[:, 1:], betas=p["betas"], transl=p["transl"],
               pose2rot=False)


def by_hand_keypoints(kps, joints, vertices):
    jw = torch.as_tensor(kps.joint_weights, dtype=joints.dtype)
    vw = torch.as_tensor(kps.vertex_weights, dtype=joints.dtype)
    return jw @ joints + vw @ vertices[:, torch.as_tensor(kps.vertex_ids)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("correctives", [True, False])
def test_matches_smplx(arrays, kps, tmp_path, dtype, correctives):
    a = dict(arrays)
    if not correctives:
        a["posedirs"] = np.zeros_like(a["posedirs"])
    model = BodyModel(a, keypoint_sets={"syn": kps}, dtype=dtype)
    assert model.has_pose_correctives == correctives
    ref = make_smplx(a, tmp_path, dtype)
    p = random_params(dtype)
    expected = smplx_forward(ref, p)
    tol = TOL[dtype]

    out = model(**p, vertices="all", keypoints="syn")
    torch.testing.assert_close(out.vertices, expected.vertices, atol=tol, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints[:, :24], atol=tol, rtol=0)
    torch.testing.assert_close(out.keypoints, by_hand_keypoints(kps, expected.joints[:, :24], expected.vertices),
                               atol=tol, rtol=0)
    assert torch.equal(out.vertex_ids, torch.arange(V))

    joints_only = model(**p)
    assert joints_only.vertices is None and joints_only.keypoints is None
    torch.testing.assert_close(joints_only.joints, expected.joints[:, :24], atol=tol, rtol=0)

    ids = np.random.default_rng(3).integers(0, V, size=40)[::-1].copy()
    ids[5] = ids[17]  # a duplicate, out of order
    for plan in (model.plan(ids), model.plan(ids, keypoints="syn")):
        sparse = model(**p, plan=plan)
        torch.testing.assert_close(sparse.vertices, expected.vertices[:, torch.as_tensor(ids)], atol=tol, rtol=0)
        torch.testing.assert_close(sparse.joints, expected.joints[:, :24], atol=tol, rtol=0)
        assert sparse.vertex_ids.tolist() == ids.tolist()
    torch.testing.assert_close(sparse.keypoints, out.keypoints, atol=tol, rtol=0)

    kp_only = model(**p, keypoints="syn")
    assert kp_only.vertices is None
    torch.testing.assert_close(kp_only.keypoints, out.keypoints, atol=tol, rtol=0)


def test_plan_evaluates_only_needed_vertices(arrays, kps):
    model = BodyModel(arrays, keypoint_sets={"syn": kps})
    assert model.plan(keypoints="syn").num_eval_vertices == len(kps.vertex_ids) < V
    assert model.plan([7, 3, 7]).num_eval_vertices == 2
    assert model.plan("all").num_eval_vertices == V
    assert model.plan().num_eval_vertices == 0
    empty = model(**random_params(torch.float32), vertices=[])
    assert empty.vertices.shape == (B, 0, 3) and empty.vertex_ids.numel() == 0


def test_fewer_betas_are_zero_padded_and_shared(arrays):
    model = BodyModel(arrays, dtype=torch.float64)
    p = random_params(torch.float64)
    p["betas"] = p["betas"][:1, :4]
    padded = dict(p, betas=torch.nn.functional.pad(p["betas"], (0, 6)).expand(B, -1))
    torch.testing.assert_close(model(**p, vertices="all").vertices, model(**padded, vertices="all").vertices)


def test_no_transl_equals_zero_transl(arrays):
    model = BodyModel(arrays)
    p = random_params(torch.float32)
    without = model(p["global_orient"], p["body_pose"], p["betas"], vertices=[1, 2])
    zero = model(**dict(p, transl=torch.zeros(B, 3)), vertices=[1, 2])
    torch.testing.assert_close(without.vertices, zero.vertices)


def test_to_dtype_and_replanning(arrays, kps):
    model = BodyModel(arrays, keypoint_sets={"syn": kps})
    plan32 = model.plan([0, 1], keypoints="syn")
    model.to(torch.float64)
    assert model.v_template.dtype == torch.float64 and model.parents.dtype == torch.long
    p = random_params(torch.float64)
    with pytest.raises(ParameterError, match="plan"):
        model(**p, plan=plan32)
    out = model(**p, plan=model.plan([0, 1], keypoints="syn"))
    assert out.vertices.dtype == torch.float64
    assert model(**p, vertices="all").vertices.dtype == torch.float64  # cache cleared by .to()


def test_properties(arrays, kps):
    model = BodyModel(arrays, keypoint_sets={"syn": kps}, num_betas=6)
    assert (model.num_joints, model.num_vertices, model.num_betas, model.body_pose_dim) == (24, V, 6, 69)
    assert model.parents.tolist() == list(SMPL_PARENTS)
    assert model.faces.dtype == torch.long and model.faces.shape == (2 * V, 3)
    assert list(model.keypoint_sets) == ["syn"]
    assert model.shapedirs.shape == (V, 3, 6)
    torch.testing.assert_close(model.shapedirs, torch.as_tensor(arrays["shapedirs"][:, :, :6], dtype=torch.float32))
    assert BodyModel(dict(arrays, posedirs=None)).has_pose_correctives is False


# ---------------------------------------------------------------- rotations / kinematics


def test_axis_angle_matches_scipy_including_tiny_angles():
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(60, 3, generator=g, dtype=torch.float64), dim=1)
    angles = torch.cat([torch.zeros(1), torch.logspace(-12, 0.5, 58), torch.tensor([np.pi])]).double()
    rv = dirs * angles[:, None]
    expected = torch.from_numpy(Rotation.from_rotvec(rv.numpy()).as_matrix())
    torch.testing.assert_close(axis_angle_to_matrix(rv[None])[0], expected, atol=1e-14, rtol=0)


def test_axis_angle_gradient_finite_at_zero():
    for scale in (0.0, 1e-9, 1e-3, 2e-2, 1.0):
        rv = (torch.randn(5, 3, dtype=torch.float64) * scale).requires_grad_()
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (rv,))
    z = torch.zeros(2, 3, requires_grad=True)
    axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_forward_kinematics_non_topological_levels():
    # Joint order not sorted by depth: exercises the level permutation.
    parents = [-1, 0, 1, 0, 3, 2, 4]
    g = torch.Generator().manual_seed(0)
    rot = axis_angle_to_matrix(torch.randn(3, 7, 3, generator=g, dtype=torch.float64))
    rest = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    posed, transforms = forward_kinematics(rot, rest, parents)
    # Reference: plain recursion over the chain.
    for b in range(3):
        G = [None] * 7
        for j in range(7):
            local = torch.eye(4, dtype=torch.float64)
            local[:3, :3] = rot[b, j]
            local[:3, 3] = rest[b, j] - (rest[b, parents[j]] if j else 0)
            G[j] = local if j == 0 else G[parents[j]] @ local
        for j in range(7):
            torch.testing.assert_close(posed[b, j], G[j][:3, 3])
            x = torch.randn(3, dtype=torch.float64)  # a rest point rigidly attached to joint j
            attached = G[j][:3, :3] @ (x - rest[b, j]) + G[j][:3, 3]
            torch.testing.assert_close(transforms[b, j, :, :3] @ x + transforms[b, j, :, 3], attached)
    one_joint = skin_vertices(rest[:, :2], torch.eye(7, dtype=torch.float64)[[4, 6]], transforms)
    torch.testing.assert_close(one_joint[:, 0], (transforms[:, 4, :, :3] @ rest[:, 0, :, None])[..., 0]
                               + transforms[:, 4, :, 3])


# ---------------------------------------------------------------- gradients


@pytest.fixture
def one_thread():
    # gradcheck runs ~10^4 tiny ops; intra-op threads only add overhead, and on
    # a busy 2-core runner their spin-waits made it 30x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("zero_pose", [False, True])
def test_gradients_match_finite_differences(arrays, kps, zero_pose, one_thread):
    model = BodyModel(arrays, keypoint_sets={"syn": kps}, dtype=torch.float64)
    plan = model.plan([5, 100, 5, 250], keypoints="syn")
    p = random_params(torch.float64, seed=4, batch=2)
    if zero_pose:
        p["body_pose"] = torch.zeros_like(p["body_pose"])
        p["global_orient"] = torch.zeros_like(p["global_orient"])
    inputs = tuple(p[k].clone().requires_grad_() for k in ("global_orient", "body_pose", "betas", "transl"))

    def f(*args):
        out = model(*args, plan=plan)
        return out.joints, out.vertices, out.keypoints

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "arg, value, pattern",
    [
        ("body_pose", torch.zeros(B, 66), r"body_pose.*\(B, 69\)"),
        ("body_pose", torch.zeros(B, 23, 3), r"body_pose.*\(B, 69\)"),
        ("global_orient", torch.zeros(B, 4), r"global_orient.*\(B, 3\)"),
        ("transl", torch.zeros(B + 1, 3), r"transl.*\(B, 3\) with B=4"),
        ("betas", torch.zeros(B, 11), r"betas.*k<=10"),
        ("transl", torch.zeros(B, 2), r"transl.*\(B, 3\)"),
        ("betas", torch.zeros(B, 10, dtype=torch.float64), r"betas.*float32"),
        ("body_pose", np.zeros((B, 69), np.float32), r"body_pose.*tensor"),
    ],
)
def test_bad_parameters_name_the_argument(arrays, arg, value, pattern):
    model = BodyModel(arrays)
    p = random_params(torch.float32)
    p[arg] = value
    with pytest.raises(ParameterError, match=pattern):
        model(**p)


@pytest.mark.parametrize("arg", ["global_orient", "body_pose", "betas", "transl"])
def test_nan_is_rejected_unless_validation_is_off(arrays, arg):
    model = BodyModel(arrays)
    p = random_params(torch.float32)
    p[arg][1, 0] = float("nan")
    with pytest.raises(ParameterError, match=rf"{arg}.*NaN"):
        model(**p)
    assert torch.isnan(model(**p, validate=False).joints).any()


def test_bad_selection(arrays, kps):
    model = BodyModel(arrays, keypoint_sets={"syn": kps})
    with pytest.raises(ParameterError, match="vertices"):
        model.plan([0, V])
    with pytest.raises(ParameterError, match="vertices"):
        model.plan("some")
    with pytest.raises(ParameterError, match="keypoints.*'coco'"):
        model.plan(keypoints="coco")
    other = BodyModel(arrays)
    with pytest.raises(ParameterError, match="plan"):
        other(**random_params(torch.float32), plan=model.plan([1]))


@pytest.mark.parametrize(
    "key, change",
    [
        ("v_template", lambda a: a["v_template"][:, :2]),
        ("shapedirs", lambda a: a["shapedirs"][:-1]),
        ("posedirs", lambda a: a["posedirs"][:, :, :-9]),
        ("J_regressor", lambda a: a["J_regressor"][:, :-1]),
        ("weights", lambda a: a["weights"][:, :-1]),
        ("kintree_table", lambda a: a["kintree_table"][:, :-1]),
        ("f", lambda a: np.full((3, 3), V)),
        ("v_template", lambda a: np.where(np.eye(V, 3, dtype=bool), np.nan, a["v_template"])),
        ("J_regressor", None),
    ],
)
def test_inconsistent_arrays_name_the_key(arrays, key, change):
    a = dict(arrays)
    if change is None:
        del a[key]
    else:
        a[key] = change(arrays)
    with pytest.raises(ValueError, match=repr(key)):
        BodyModel(a)


def test_bad_tree_and_keypoint_set(arrays):
    a = dict(arrays)
    kt = arrays["kintree_table"].copy()
    kt[0, 5] = 7
    a["kintree_table"] = kt
    with pytest.raises(ValueError, match="kintree_table"):
        BodyModel(a)
    bad = KeypointSet("bad", ("x",), np.array([0]), np.ones((1, 1)), np.zeros((1, 23)))
    with pytest.raises(ValueError, match="bad.*joint_weights"):
        BodyModel(arrays, keypoint_sets={"bad": bad})


def test_accepts_sparse_regressor(arrays):
    import scipy.sparse

    dense = BodyModel(arrays)
    sparse = BodyModel(dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"])))
    torch.testing.assert_close(dense.J_template, sparse.J_template)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(arrays, kps):
    cpu = BodyModel(arrays, keypoint_sets={"syn": kps}, dtype=torch.float64)
    gpu = BodyModel(arrays, keypoint_sets={"syn": kps}, dtype=torch.float64).to("cuda")
    p = random_params(torch.float64)
    ids = [9, 2, 9, 150]
    expected = cpu(**p, plan=cpu.plan(ids, keypoints="syn"))
    p_gpu = {k: v.cuda().requires_grad_() for k, v in p.items()}
    out = gpu(**p_gpu, plan=gpu.plan(ids, keypoints="syn"))
    for name in ("joints", "vertices", "keypoints"):
        torch.testing.assert_close(getattr(out, name).cpu(), getattr(expected, name), atol=1e-10, rtol=0)
    (out.vertices.sum() + out.keypoints.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in p_gpu.values())
