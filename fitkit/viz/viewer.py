"""``fitkit view``: an interactive 3D viewer of a fit folder in the browser (viser).

The scene is the fit's camera frame (OpenCV axes: x right, y down, z
forward, meters) shown with -y up, so an upright body stands upright. It holds

- the fitted mesh of every person at the current time step (``/bodies/<k>``);
- the camera as a frustum at the origin (``/camera``), with the frame's image
  on it: the input image when the observations name one, else the overlay
  ``OUT/overlays/<frame>.png`` when ``fitkit fit --overlays`` wrote it;
- a GUI: a time slider, a play checkbox with its frame rate, and the frame
  ids, 2D error and quality flag of the rows shown.

Time steps: for observations with tracks or frame numbers (videos), the rows
that share a time index (:meth:`Observations.time_indices`) are shown
together, one mesh per track; otherwise each row is its own step. Meshes
are computed when a step is first shown and kept in a small cache, so long
sequences need no memory up front.

viser is an optional dependency (``pip install "fitkit[view]"``).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Optional

import numpy as np

from fitkit.errors import FitkitError
from fitkit.viz.fit_folder import FitFolder, body_vertices, read_image_rgb

log = logging.getLogger(__name__)

__all__ = ["FitViewer", "ViewerUnavailable", "import_viser", "time_steps"]

BODY_COLOR = (120, 170, 230)
BAD_COLOR = (230, 110, 100)  # the mesh of a row failing quality_ok
FRUSTUM_SCALE = 0.6          # meters from the camera centre to the drawn image plane
IMAGE_SIDE = 640             # longest side of the image sent for the frustum, pixels
CACHE_STEPS = 64


class ViewerUnavailable(FitkitError, ImportError):
    """viser is not installed."""


def import_viser():
    """The viser module, or ViewerUnavailable saying how to install it."""
    try:
        import viser
    except ImportError as exc:
        raise ViewerUnavailable(f"fitkit view needs viser, which is not installed ({exc}); "
                                'install it with: pip install "fitkit[view]"') from None
    return viser


def time_steps(folder: FitFolder) -> list[list[int]]:
    """Rows shown together at each step: grouped by time index for videos (in time
    order, rows of one step in track order), one row per step otherwise."""
    times = folder.time_indices
    if times is None:
        return [[r] for r in range(len(folder))]
    groups: dict[int, list[int]] = {}
    for r, t in enumerate(times):
        groups.setdefault(int(t), []).append(r)
    return [groups[t] for t in sorted(groups)]


class FitViewer:
    """A viser server showing a fit folder.

    Args:
        folder: from :func:`fitkit.viz.fit_folder.load_fit_folder`.
        model: the body model of the fit (:func:`fitkit.viz.fit_folder.load_model_for`).
        host: address to listen on (default 127.0.0.1: this machine only).
        port: port to try first; viser moves to the next free port when it is taken;
            0 lets the system pick one.
        verbose: let viser print its own connection messages.
    """

    def __init__(self, folder: FitFolder, model, *, host: str = "127.0.0.1", port: int = 8080,
                 verbose: bool = False):
        self.folder = folder
        self.model = model
        self.host, self.requested_port, self.verbose = host, int(port), verbose
        self.steps = time_steps(folder)
        if not self.steps:
            raise FitkitError(f"{folder.path / 'result.npz'}: has no frames to show")
        self.faces = model.faces.cpu().numpy().astype(np.uint32)
        self.slots = max(len(rows) for rows in self.steps)  # meshes needed at once
        self.server = None
        self.step = -1
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._player: Optional[threading.Thread] = None

    # ------------------------------------------------------------ life cycle
    def start(self) -> "FitViewer":
        """Start the server and build the scene at step 0; returns self."""
        viser = import_viser()
        self.server = viser.ViserServer(host=self.host, port=self.requested_port, verbose=self.verbose)
        scene, gui = self.server.scene, self.server.gui
        scene.set_up_direction("-y")
        first = self.vertices(0)
        centre = first.reshape(-1, 3).mean(axis=0)
        # look at the first body from behind and above the camera
        self.server.initial_camera.position = (float(centre[0]) + 1.5, float(centre[1]) - 1.5, -1.5)
        self.server.initial_camera.look_at = tuple(float(c) for c in centre)
        self.bodies = [scene.add_mesh_simple(f"/bodies/{k}", first[min(k, len(first) - 1)], self.faces,
                                             color=BODY_COLOR, side="double", visible=k < len(first))
                       for k in range(self.slots)]
        fov, aspect = self._camera(self.steps[0][0])
        self.frustum = scene.add_camera_frustum("/camera", fov=fov, aspect=aspect, scale=FRUSTUM_SCALE,
                                                color=(40, 40, 40), thickness=0.01, image=self.image(self.steps[0][0]))
        n = len(self.steps)
        self.slider = gui.add_slider("time step", min=0, max=max(n - 1, 1), step=1, initial_value=0,
                                     disabled=n == 1)
        self.play = gui.add_checkbox("play", False, disabled=n == 1)
        self.fps = gui.add_slider("frames per second", min=1, max=60, step=1, initial_value=10)
        self.info = gui.add_markdown("")
        self.slider.on_update(lambda _event: self.show(int(self.slider.value)))
        self.show(0)
        self._player = threading.Thread(target=self._play_loop, name="fitkit-view-play", daemon=True)
        self._player.start()
        log.info("viewer at %s (%d steps, %d rows)", self.url, n, len(self.folder))
        return self

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        """Stop the play thread and the server (safe to call twice)."""
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5)
            self._player = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self) -> None:
        """Block until Ctrl-C (or :meth:`stop` from another thread), then stop."""
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ------------------------------------------------------------ content
    def vertices(self, step: int) -> np.ndarray:
        """(R, V, 3) float32 vertices (camera frame, meters) of the rows of a step."""
        with self._lock:
            if step in self._cache:
                self._cache.move_to_end(step)
                return self._cache[step]
        verts = body_vertices(self.folder, self.steps[step], self.model)
        with self._lock:
            self._cache[step] = verts
            while len(self._cache) > CACHE_STEPS:
                self._cache.popitem(last=False)
        return verts

    def image(self, row: int) -> Optional[np.ndarray]:
        """The picture on the frustum for a row: (H, W, 3) uint8 RGB shrunk to IMAGE_SIDE, or None."""
        img = self.folder.frame_image(row)
        if img is None:
            p = self.folder.overlay_path(row)
            img = read_image_rgb(p) if p is not None else None
        if img is None:
            return None
        h, w = img.shape[:2]
        scale = IMAGE_SIDE / max(h, w)
        if scale < 1.0:
            import cv2

            img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return img

    def _camera(self, row: int) -> tuple[float, float]:
        """(vertical field of view in radians, width / height) of a row's camera."""
        K = np.asarray(self.folder.result["intrinsics"][row], dtype=np.float64)
        w, h = (float(v) for v in np.asarray(self.folder.result["image_size"][row]).tolist())
        return 2.0 * math.atan(0.5 * h / K[1, 1]), w / h

    def show(self, step: int) -> None:
        """Show time step ``step`` (0-based): meshes, frustum and image, info text."""
        step = int(np.clip(step, 0, len(self.steps) - 1))
        if self.server is None or step == self.step:
            return
        rows = self.steps[step]
        verts = self.vertices(step)
        ok = np.asarray(self.folder.result.get("quality_ok", np.ones(len(self.folder), bool)), dtype=bool)
        with self.server.atomic():
            for k, body in enumerate(self.bodies):
                if k < len(rows):
                    body.vertices = verts[k]
                    body.color = BODY_COLOR if ok[rows[k]] else BAD_COLOR
                    body.visible = True
                else:
                    body.visible = False
            fov, aspect = self._camera(rows[0])
            self.frustum.fov, self.frustum.aspect = fov, aspect
            img = self.image(rows[0])
            if img is not None:
                self.frustum.image = img
        self.info.content = self._info(step, rows)
        self.step = step

    def _info(self, step: int, rows: list[int]) -> str:
        res, folder = self.folder.result, self.folder
        lines = [f"**step {step + 1} / {len(self.steps)}**", ""]
        tracks = folder.track_ids
        for r in rows:
            err = float(res["err2d_px"][r]) if "err2d_px" in res else float("nan")
            flag = "ok" if bool(np.asarray(res.get("quality_ok", [True] * len(folder)))[r]) else "**quality_ok false**"
            who = f" (track {tracks[r]})" if tracks else ""
            err_text = f"{err:.2f} px" if math.isfinite(err) else "no evidence"
            lines.append(f"- `{folder.frame_ids[r]}`{who}: 2D error {err_text}, {flag}")
        return "\n".join(lines)

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            if self.server is not None and self.play.value and len(self.steps) > 1:
                nxt = (max(self.step, 0) + 1) % len(self.steps)
                self.slider.value = nxt  # fires the slider's on_update -> show()
                self.show(nxt)           # in case the callback has not run yet
                self._stop.wait(1.0 / max(1, float(self.fps.value)))
            else:
                self._stop.wait(0.1)
