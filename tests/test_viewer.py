"""`fitkit view`: the viser scene of a fit folder, read back over the viewer's own websocket."""
from __future__ import annotations

import math
import socket
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.cli import main
from fitkit.io.params import load_result
from fitkit.viz.fit_folder import load_fit_folder, load_model_for
from fitkit.viz.viewer import FitViewer, ViewerUnavailable, import_viser, time_steps

from .fit_folders import IMAGE_SIZE, make_fit_folder

viser = pytest.importorskip("viser", reason='viser is not installed (pip install "fitkit[view]")')


@pytest.fixture(scope="module")
def video_fit(tmp_path_factory):
    """Two tracks 'a' and 'b' of 3 frames each, with images beside the observation file."""
    return make_fit_folder(tmp_path_factory.mktemp("viewer"), video=True, overlays=False, frames=6, seed=7)


def _expected_vertices(out, rows) -> np.ndarray:
    """The fitted meshes straight from the result's parameters and the open body."""
    res = load_result(out / "result.npz")
    model = load_body_model("open", num_betas=res["betas"].shape[1])
    p = [torch.as_tensor(res[k][rows], dtype=torch.float32) for k in ("global_orient", "body_pose", "betas", "transl")]
    with torch.no_grad():
        return model(*p, vertices="all").vertices.numpy()


def _decode(raw: bytes) -> list[tuple[dict, list[bytes]]]:
    """One websocket frame of viser's wire format: [8 B msgpack size][8 B zstd size][zstd msgpack]
    then the binary buffers, each aligned to 8 bytes (viser/infra/_infra.py, _message_producer)."""
    import msgspec
    import zstandard

    size, packed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
    body = msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(raw[16:16 + packed],
                                                                          max_output_size=size))
    offset, buffers = 16 + packed, []
    for length in body["binaryBufferLengths"]:
        offset += (8 - offset % 8) % 8
        buffers.append(raw[offset:offset + length])
        offset += length
    return [(m, buffers) for m in body["messages"]]


def _array(value, buffers) -> np.ndarray:
    return np.frombuffer(buffers[value["__binary_index"]], dtype=value["dtype"])


def _receive(ws, until, timeout=10.0) -> list:
    """Messages until ``until(messages)`` holds or ``timeout`` seconds pass."""
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end and not until(got):
        try:
            raw = ws.recv(timeout=0.5)
        except TimeoutError:
            continue
        got += _decode(raw)
    return got


def test_time_steps_group_rows_by_time(video_fit):
    out, _ = video_fit
    folder = load_fit_folder(out)
    assert folder.track_ids == ["a"] * 3 + ["b"] * 3
    assert time_steps(folder) == [[0, 3], [1, 4], [2, 5]]
    folder.observations = None  # without tracks every row is a step
    assert time_steps(folder) == [[r] for r in range(6)]


def test_viewer_sends_meshes_camera_and_image(video_fit):
    from websockets.sync.client import connect

    out, _ = video_fit
    folder = load_fit_folder(out)
    viewer = FitViewer(folder, load_model_for(folder), port=0)
    try:
        viewer.start()
        assert viewer.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(viewer.url, timeout=10).read().decode("utf-8", "replace")
        assert "<html" in page.lower()
        with connect(viewer.url.replace("http://", "ws://"), subprotocols=[f"viser-v{viser.__version__}"],
                     open_timeout=10) as ws:
            msgs = _receive(ws, lambda got: any(m["type"] == "ReplayDoneMessage" for m, _ in got))
            meshes = {m["name"]: (m, b) for m, b in msgs if m["type"] == "MeshMessage"}
            assert set(meshes) == {"/bodies/0", "/bodies/1"}  # two tracks at once
            want = _expected_vertices(out, [0, 3])  # step 0: time 0 of tracks a and b
            faces = load_body_model("open").faces.numpy()
            for k in (0, 1):
                m, b = meshes[f"/bodies/{k}"]
                v = _array(m["props"]["vertices"], b).reshape(-1, 3)
                np.testing.assert_allclose(v, want[k], atol=1e-5)
                np.testing.assert_array_equal(_array(m["props"]["faces"], b).reshape(-1, 3), faces)
            frustum = [m for m, _ in msgs if m["type"] == "CameraFrustumMessage"]
            assert [m["name"] for m in frustum] == ["/camera"]
            K = load_result(out / "result.npz")["intrinsics"][0]
            assert frustum[0]["props"]["fov"] == pytest.approx(2 * math.atan(0.5 * IMAGE_SIZE[1] / K[1, 1]), rel=1e-6)
            assert frustum[0]["props"]["aspect"] == pytest.approx(IMAGE_SIZE[0] / IMAGE_SIZE[1])
            import cv2

            image = cv2.imdecode(np.frombuffer(frustum[0]["props"]["_image_data"], np.uint8), cv2.IMREAD_COLOR)
            assert image.shape[:2] == (IMAGE_SIZE[1], IMAGE_SIZE[0])  # the input picture of frame a_0000
            assert any(m["type"] == "GuiSliderMessage" for m, _ in msgs)

            # moving the time step sends the meshes of time 2
            viewer.show(2)
            updates = _receive(ws, lambda got: sum(m["type"] == "SceneNodeUpdateMessage"
                                                   and "vertices" in m["updates"] for m, _ in got) >= 2)
            sent = {m["name"]: _array(m["updates"]["vertices"], b).reshape(-1, 3) for m, b in updates
                    if m["type"] == "SceneNodeUpdateMessage" and "vertices" in m["updates"]}
            want = _expected_vertices(out, [2, 5])
            np.testing.assert_allclose(sent["/bodies/0"], want[0], atol=1e-5)
            np.testing.assert_allclose(sent["/bodies/1"], want[1], atol=1e-5)
            assert "b_0002" in viewer.info.content
            # play advances the time step on its own (and wraps around: 3 steps)
            viewer.fps.value = 30
            viewer.play.value = True
            end = time.monotonic() + 5
            while viewer.step == 2 and time.monotonic() < end:
                time.sleep(0.05)
            viewer.play.value = False
            assert viewer.step in (0, 1) and int(viewer.slider.value) in (0, 1, 2)
    finally:
        port = viewer.server.get_port() if viewer.server is not None else None
        viewer.stop()
    assert viewer.server is None
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_view_without_viser_says_how_to_install(video_fit, monkeypatch, capsys):
    out, _ = video_fit
    monkeypatch.setitem(sys.modules, "viser", None)  # makes `import viser` fail
    with pytest.raises(ViewerUnavailable, match=r'pip install "fitkit\[view\]"'):
        import_viser()
    assert main(["view", str(out)]) == 2
    assert 'pip install "fitkit[view]"' in capsys.readouterr().err


def test_view_of_a_folder_without_result(tmp_path, capsys):
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    assert f"{tmp_path / 'result.npz'} not found" in capsys.readouterr().err


def test_view_command_serves_until_interrupted(video_fit):
    """`fitkit view OUT --port 0` in a subprocess: it prints its URL, serves the page, stops on Ctrl-C."""
    import signal
    import subprocess

    out, _ = video_fit
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from fitkit.cli import main; sys.exit(main())",
                             "view", str(out), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url, end = None, time.monotonic() + 30
        while url is None and time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("fitkit view:") and " at http://127.0.0.1:" in line:
                url = line.split(" at ", 1)[1].split()[0]
        assert url is not None, "no URL printed"
        assert "6 frames in 3 time steps" in line
        assert "<html" in urllib.request.urlopen(url, timeout=10).read().decode("utf-8", "replace").lower()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, rest
        assert f"stopped the viewer at {url}" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
