"""Mesh writers: the axis convention, outward faces both ways, and trimesh's loaders as the oracle."""
import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import facing_camera_orient
from fitkit.io.mesh import AXES, convert_axes, write_obj, write_ply

HEAD, LEFT_ANKLE, RIGHT_ANKLE = 15, 7, 8  # SMPL joint indices


@pytest.fixture(scope="module")
def standing_body():
    """The open body standing upright and facing an OpenCV camera 3 m away: vertices, faces, joints."""
    model = load_body_model("open", num_betas=10)
    out = model(facing_camera_orient(1), torch.zeros(1, 69), torch.zeros(1, 10), torch.tensor([[0.0, 0.2, 3.0]]),
                vertices="all")
    return out.vertices[0].numpy().astype(np.float64), np.asarray(model.faces), out.joints[0].numpy()


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Volume enclosed by the triangles, positive when they wind counter-clockwise seen from outside."""
    v = v - v.mean(axis=0)  # about the centroid, so small holes barely depend on where the origin is
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def read_obj(path):
    """A minimal independent OBJ parser (v and f lines)."""
    verts, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif parts and parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:4]])
    return np.array(verts), np.array(faces)


def test_yup_export_puts_the_head_above_the_feet(tmp_path, standing_body):
    v, f, joints = standing_body
    feet_y = joints[[LEFT_ANKLE, RIGHT_ANKLE], 1].mean()
    assert joints[HEAD, 1] < feet_y  # OpenCV: y down, the head has the smaller y
    write_obj(tmp_path / "cv.obj", v, f)
    write_obj(tmp_path / "up.obj", v, f, axes="yup")
    cv, _ = read_obj(tmp_path / "cv.obj")
    up, faces = read_obj(tmp_path / "up.obj")
    np.testing.assert_allclose(cv, v, atol=1e-6)
    np.testing.assert_allclose(up, v * [1, -1, -1], atol=1e-6)
    np.testing.assert_array_equal(faces, f)
    head_y = convert_axes(joints[[HEAD]], "yup")[0, 1]
    feet = convert_axes(joints[[LEFT_ANKLE, RIGHT_ANKLE]], "yup")
    assert head_y > feet[:, 1].mean() + 1.0  # at least a metre higher
    assert up[:, 1].max() > up[:, 1].min() + 1.4 and np.argmax(up[:, 1]) == np.argmin(cv[:, 1])
    # z towards the viewer: the body, 3 m in front of the camera, now has z < 0
    assert up[:, 2].max() < 0


def test_faces_stay_outward_in_both_conventions(tmp_path, standing_body):
    v, f, _ = standing_body
    for axes in AXES:
        write_ply(tmp_path / f"{axes}.ply", v, f, axes=axes)
        write_obj(tmp_path / f"{axes}.obj", v, f, axes=axes)
        ov, of = read_obj(tmp_path / f"{axes}.obj")
        assert signed_volume(ov, of) > 0.03, axes  # an adult body holds some 0.06 m^3
    # the same check can fail: reversed winding gives a negative volume
    assert signed_volume(v, f[:, ::-1]) < -0.03


def test_trimesh_reads_back_what_was_written(tmp_path, standing_body):
    trimesh = pytest.importorskip("trimesh")
    v, f, _ = standing_body
    for axes in AXES:
        want = v * np.asarray(AXES[axes])
        for ext, writer, atol in (("obj", write_obj, 1e-6), ("ply", write_ply, 1e-6)):
            path = writer(tmp_path / f"{axes}.{ext}", torch.from_numpy(v), torch.from_numpy(f), axes=axes)
            mesh = trimesh.load(path, process=False, force="mesh")
            np.testing.assert_allclose(mesh.vertices, want, atol=atol, rtol=0)
            np.testing.assert_array_equal(mesh.faces, f)
            # trimesh's own volume agrees with the sign check above
            assert mesh.volume > 0.03, (axes, ext)


@pytest.mark.parametrize("writer", [write_obj, write_ply])
def test_unknown_axes_are_refused_naming_the_allowed_ones(tmp_path, writer):
    with pytest.raises(ValueError, match=r"a\.mesh: axes must be one of 'opencv', 'yup', got 'zup'"):
        writer(tmp_path / "a.mesh", np.zeros((3, 3)), np.array([[0, 1, 2]]), axes="zup")
    assert list(tmp_path.iterdir()) == []
