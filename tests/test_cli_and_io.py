"""The demo command, mesh writers, atomic writes and load_body_model's argument checks."""
import json

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.cli import main
from fitkit.io.atomic import atomic_write
from fitkit.io.mesh import write_obj, write_ply


def _read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(x) - 1 for x in line.split()[1:]])
    return np.array(v), np.array(f)


def _read_ply(path):
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    nv = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    nf = int(next(l for l in lines if l.startswith("element face")).split()[-1])
    v = np.frombuffer(body[: nv * 12], dtype="<f4").reshape(nv, 3)
    rows = np.frombuffer(body[nv * 12:], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    assert len(rows) == nf and (rows["n"] == 3).all()
    return v, rows["idx"]


def test_demo_writes_meshes_and_summary(tmp_path):
    assert main(["body", "--output", str(tmp_path / "demo"), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    model = load_body_model("open")
    assert summary["vertices"] == model.num_vertices and summary["joints"] == 24
    h = summary["height_m"]
    assert h["beta0=-2"] < h["mean"] < h["beta0=+2"]
    zero_v, zero_f = _read_obj(tmp_path / "demo" / "open_body_zero_pose.obj")
    posed_v, posed_f = _read_obj(tmp_path / "demo" / "open_body_posed.obj")
    ply_v, ply_f = _read_ply(tmp_path / "demo" / "open_body_posed.ply")
    assert zero_v.shape == (model.num_vertices, 3) and np.array_equal(zero_f, model.faces.numpy())
    assert np.allclose(ply_v, posed_v, atol=1e-5) and np.array_equal(ply_f, posed_f)
    # the demo pose lowers the arms: the wrists drop well below the shoulders
    wrist_y = summary["left_wrist_posed_m"][1]
    rest = model(torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 10))
    assert wrist_y < float(rest.joints[0, 16, 1]) - 0.3


def test_mesh_writers_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="vertices must have shape"):
        write_obj(tmp_path / "a.obj", np.zeros((4, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="face indices"):
        write_ply(tmp_path / "a.ply", np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="NaN"):
        write_obj(tmp_path / "a.obj", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_gives_plain_open_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as f:
            f.write("x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("a.txt") == mode("b.txt") == 0o644


def test_load_body_model_argument_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="model_type"):
        load_body_model("smpl-x")
    with pytest.raises(ValueError, match="gender"):
        load_body_model("open", gender="other")
    monkeypatch.delenv("FITKIT_MODELS", raising=False)
    with pytest.raises(ValueError, match="FITKIT_MODELS"):
        load_body_model("smpl")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_body_model("smpl", model_dir=tmp_path)
