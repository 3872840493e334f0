"""Optical flow as a dense cue (fitkit.io.optical_flow): OpenCV flow on a known shift,
per-frame flow files, and attaching flow to observations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitkit.errors import ObservationError, ParameterError
from fitkit.io.flow_readers import write_flo
from fitkit.io.observations import Observations
from fitkit.io.optical_flow import FLOW_METHODS, add_flow, compute_flow, read_flow_files

SHIFT = (3, -2)  # (dx, dy) pixels: frame 1 is frame 0 moved 3 px right and 2 px up


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 smooth random texture: random colours every 6 px, cubic-interpolated."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 6 + 1, width // 6 + 1, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _shifted_pair(size: int = 112, margin: int = 10) -> np.ndarray:
    """(2, size, size, 3): crops of one texture with frame1(x + dx, y + dy) = frame0(x, y)."""
    dx, dy = SHIFT
    big = _texture(size + 2 * margin, size + 2 * margin)
    f0 = big[margin:margin + size, margin:margin + size]
    f1 = big[margin - dy:margin - dy + size, margin - dx:margin - dx + size]
    return np.stack([f0, f1])


# ---------------------------------------------------------------- compute_flow

@pytest.mark.parametrize("method", FLOW_METHODS)
def test_compute_flow_recovers_a_known_shift(method):
    frames = _shifted_pair()
    flow = compute_flow(frames, method)
    assert flow.shape == (2, 112, 112, 2) and flow.dtype == np.float32
    inner = flow[0, 16:-16, 16:-16].reshape(-1, 2)  # away from the borders, where content leaves
    assert np.isfinite(inner).all()
    np.testing.assert_allclose(np.median(inner, axis=0), SHIFT, atol=0.3)
    assert np.isnan(flow[1]).all()  # the last frame has no successor


def test_compute_flow_inputs_and_presets():
    frames = np.concatenate([_shifted_pair(64)] * 2)  # 4 frames: shift, jump back, shift
    flow = compute_flow(frames, "dis", preset="fast")
    assert flow.shape == (4, 64, 64, 2) and np.isnan(flow[3]).all() and np.isfinite(flow[:3]).all()
    as_float = compute_flow(frames.astype(np.float32) / 255.0, "dis", preset="fast")
    np.testing.assert_allclose(as_float, flow, atol=1e-5, equal_nan=True)  # same uint8 grey images
    single = compute_flow(frames[:1], "farneback")
    assert single.shape == (1, 64, 64, 2) and np.isnan(single).all()
    torch_in = compute_flow(torch.from_numpy(frames[:2]), "dis", preset="fast")
    np.testing.assert_allclose(torch_in[0], flow[0], atol=1e-6)


def test_compute_flow_rejects_bad_arguments():
    frames = _shifted_pair(32)
    with pytest.raises(ValueError, match="dis.*farneback"):
        compute_flow(frames, "raft")
    with pytest.raises(ValueError, match="ultrafast"):
        compute_flow(frames, "dis", preset="slow")
    with pytest.raises(ParameterError, match=r"\(T, H, W, 3\)"):
        compute_flow(frames[..., :2])
    with pytest.raises(ParameterError, match="dtype"):
        compute_flow(frames.astype(np.int32))


# ---------------------------------------------------------------- read_flow_files

def _field(h, w, seed):
    return np.random.default_rng(seed).normal(0, 5, (h, w, 2)).astype(np.float32)


def test_read_flow_files_round_trip_and_missing(tmp_path):
    a, b = _field(6, 9, 1), _field(6, 9, 2)
    a[2, 3] = np.nan
    write_flo(tmp_path / "f0.flo", a)
    np.save(tmp_path / "f1.npy", b)
    (tmp_path / "unrelated.npy").write_bytes(b"not read")  # not one of the frame ids
    flow, missing = read_flow_files(tmp_path, ["f0", "f1", "f2"], (9, 6))
    assert flow.shape == (3, 6, 9, 2) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow[0], a)  # NaN in the same place
    np.testing.assert_array_equal(flow[1], b)
    assert missing == ["f2"] and np.isnan(flow[2]).all()
    # a list of paths, and the image size as Observations store it
    listed, missing = read_flow_files([tmp_path / "f1.npy", str(tmp_path / "f0.flo")], ["f0", "f1"],
                                      torch.tensor([[9.0, 6.0], [9.0, 6.0]]))
    np.testing.assert_array_equal(listed, flow[:2])
    assert missing == []


def test_read_flow_files_errors_name_the_file(tmp_path):
    np.save(tmp_path / "f0.npy", _field(6, 9, 1))
    with pytest.raises(ObservationError, match=r"f0\.npy.*9x6.*expected 10x6"):
        read_flow_files(tmp_path, ["f0"], (10, 6))
    write_flo(tmp_path / "f0.flo", _field(6, 9, 1))
    with pytest.raises(ObservationError, match=r"f0\.(npy|flo).*f0\.(npy|flo).*'f0'"):
        read_flow_files(tmp_path, ["f0"], (9, 6))
    (tmp_path / "f1.flo").write_bytes(b"garbage!" * 3)
    with pytest.raises(ObservationError, match=r"f1\.flo"):
        read_flow_files(tmp_path, ["f1"], (9, 6))
    (tmp_path / "f2.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ObservationError, match=r"f2\.npy"):
        read_flow_files(tmp_path, ["f2"], (9, 6))
    with pytest.raises(ObservationError, match=r"f3\.png"):
        read_flow_files([tmp_path / "f3.png"], ["f3"], (9, 6))
    with pytest.raises(ObservationError, match="no_such_dir"):
        read_flow_files(tmp_path / "no_such_dir", ["f0"], (9, 6))


# ---------------------------------------------------------------- add_flow

def _observations(n=3, w=9, h=6, dtype=torch.float64, dense=None):
    kp = np.zeros((n, 25, 3))
    kp[:, :, :2] = 4.0
    kp[:, :, 2] = 1.0
    return Observations.from_arrays(kp, "body25", (w, h), dtype=dtype, source="obs.npz", dense=dense)


def test_add_flow_sets_a_checked_tensor():
    iuv = np.zeros((3, 6, 9, 3))
    obs = _observations(dense={"iuv": iuv})
    flow = np.stack([_field(6, 9, i) for i in range(3)])
    flow[-1] = np.nan
    out = add_flow(obs, flow)
    assert out is not obs and "flow" not in obs.dense  # the input is not modified
    assert set(out.dense) == {"iuv", "flow"}
    f = out.dense["flow"]
    assert isinstance(f, torch.Tensor) and f.dtype == torch.float64 and f.shape == (3, 6, 9, 2)
    np.testing.assert_array_equal(f.numpy(), flow.astype(np.float64))
    again = add_flow(out, torch.zeros(3, 6, 9, 2, dtype=torch.float32))  # replaces, converts the dtype
    assert again.dense["flow"].dtype == torch.float64 and float(again.dense["flow"].abs().sum()) == 0


def test_add_flow_rejects_wrong_sizes():
    obs = _observations()
    with pytest.raises(ObservationError, match=r"obs\.npz.*dense_flow.*10x6"):
        add_flow(obs, np.zeros((3, 6, 10, 2)))
    with pytest.raises(ObservationError, match="dense_flow.*2 frames"):
        add_flow(obs, np.zeros((2, 6, 9, 2)))
    with pytest.raises(ObservationError, match="dense_flow"):
        add_flow(obs, np.zeros((3, 6, 9, 3)))
