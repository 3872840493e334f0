"""Calibrated cameras from files: pose2sim TOML, Qualisys .qca.txt, OpenCV, EasyMocap, JSON.

Every reader returns one :class:`CameraCalib` per view, in fitkit's camera
conventions (``docs/conventions.md``): OpenCV axes (x right, y down, z
forward), pixel centres at integer coordinates, meters in 3D, and the
extrinsics as a world -> camera map ``x_cam = R @ x_world + t``.

Entry points:

* :func:`read_cameras` ``(path, fmt="auto") -> {name: CameraCalib}``;
* :func:`read_camera` ``(path, view=None) -> CameraCalib`` (one view);
* :func:`undistort_points` / :func:`project_points`: OpenCV's lens model
  (k1, k2, p1, p2[, k3[, k4, k5, k6]]);
* :func:`apply_camera` ``(obs, calib) -> Observations``: undistorts the
  keypoints, sets the intrinsics to K and records the extrinsics.

fitkit's fitting model is a pinhole camera (:mod:`fitkit.camera`), so the
lens distortion is removed from the keypoints *before* fitting and the fit
uses K; the distortion never enters the optimisation.

Formats (``fmt``), chosen by ``"auto"`` from the path and the content:

``"toml"``
    pose2sim's ``Calib*.toml``: one table per camera with ``name``, ``size``
    ([w, h]), ``matrix`` (3x3), ``distortions`` ([k1, k2, p1, p2]),
    ``rotation`` (Rodrigues vector, world -> camera), ``translation``
    (meters) and ``fisheye`` (must be false); a ``[metadata]`` table is ignored.
``"qca"``
    Qualisys ``.qca.txt`` (XML). Per camera (``serial`` = view name):
    ``fov_video`` gives the image window (width = right - left + 1, height =
    bottom - top + 1); ``intrinsic`` gives focal lengths, principal point and
    skew in sensor sub-pixels (1/64 pixel) on the full sensor, so they are
    divided by 64 and the principal point is shifted by the window's
    (left, top); the distortion coefficients are divided by 64 too, as
    pose2sim's reader and writer do (a plumb-line check on the dev-set
    videos, ``tools/check_qca_distortion.py``, agrees; ``docs/observations.md``);
    ``transform`` gives the camera position in the world (mm) and a rotation
    whose rows are the camera's axes in world coordinates, for a camera that
    looks along -z with y up, so fitkit's R is that rotation with its second
    and third rows negated and ``t = -R @ position``. Only ``viewrotation="0"``
    is supported (a rotated view is refused).
``"opencv"``
    a YAML or JSON file written by ``cv2.FileStorage`` with one camera:
    ``camera_matrix`` or ``K``; ``dist_coeffs``, ``distortion_coefficients``,
    ``dist`` or ``D`` (optional: zeros); ``rvec`` (Rodrigues) or ``R`` (3x3, or
    a 3-vector taken as Rodrigues); ``tvec``, ``T`` or ``t``;
    ``image_width`` / ``image_height`` or ``image_size`` ([w, h]); optional
    ``name`` (else the file's stem). Without rotation and translation the
    camera frame is the world frame; without an image size the size is
    unknown (None).
``"easymocap"``
    EasyMocap's ``intri.yml`` + ``extri.yml`` (cv2.FileStorage YAML): ``names``,
    ``K_<name>``, ``dist_<name>``, optional ``H_<name>``/``W_<name>`` (image
    height/width; else unknown), ``R_<name>`` (Rodrigues) or ``Rot_<name>``
    (3x3), ``T_<name>``. The path may be either file or their folder.
``"json"``
    fitkit's plain JSON: ``{"cameras": {name: {"K": 3x3, "dist": [...], "R": 3x3,
    "t": [3], "size": [w, h]}}}``, or one camera's object without the
    ``cameras`` level (named after the file's stem). ``dist`` is optional.

Translations are meters in every format except the .qca (mm, converted);
OpenCV and EasyMocap files do not record units, so they must be meters.

Bad input raises :class:`CameraError` (an ``ObservationError``, so a
``ValueError``) naming the file, the view and the field: missing fields,
unknown view names (the names are listed), unknown formats (the supported ones
are listed), non-finite numbers, wrong shapes, a focal length <= 0, a K whose
last row is not (0, 0, 1), a distortion vector whose length is not 0, 4, 5 or
8, and a rotation that is not one (``|R R^T - I|`` or ``|det R - 1|`` above
1e-6).
"""
from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from fitkit.errors import ObservationError

log = logging.getLogger(__name__)

#: Names accepted by ``fmt`` (besides ``"auto"``).
FORMATS = ("toml", "qca", "opencv", "easymocap", "json")
#: Distortion vector lengths accepted (OpenCV's k1 k2 p1 p2 [k3 [k4 k5 k6]]).
DIST_LENGTHS = (0, 4, 5, 8)
#: Tolerance on ``R R^T = I`` and ``det R = 1``.
ROTATION_TOL = 1e-6
#: Qualisys sensor coordinates are in 1/64 pixel.
QCA_SUBPIXELS = 64.0


class CameraError(ObservationError):
    """A calibration file, or a camera applied to observations, is invalid."""


@dataclass(eq=False)
class CameraCalib:
    """One calibrated view.

    Attributes:
        name: the view's name as the file gives it (``cam01``, ...).
        K: (3, 3) float64 intrinsics in pixels, OpenCV convention (x right,
            y down, pixel centres at integer coordinates).
        dist: (k,) float64 OpenCV distortion coefficients k1, k2, p1, p2[, k3[,
            k4, k5, k6]], k in (0, 4, 5, 8); all zeros (or empty) = no distortion.
        R: (3, 3) float64 world -> camera rotation.
        t: (3,) float64 world -> camera translation in meters:
            ``x_cam = R @ x_world + t``.
        image_size: (width, height) in pixels, or None where the file does not
            say (OpenCV / EasyMocap files without a size).
        source: the file it was read from (named in errors).
    """

    name: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image_size: Optional[tuple[int, int]]
    source: str = "<memory>"

    @property
    def center(self) -> np.ndarray:
        """(3,) the camera centre in world coordinates, meters (``-R^T t``)."""
        return -self.R.T @ self.t

    @property
    def world_to_camera(self) -> np.ndarray:
        """(4, 4) homogeneous world -> camera transform [[R, t], [0, 0, 0, 1]]."""
        m = np.eye(4)
        m[:3, :3] = self.R
        m[:3, 3] = self.t
        return m

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def to_json(self) -> dict:
        """This view as an entry of the plain JSON format (lists of floats)."""
        out = {"K": self.K.tolist(), "dist": self.dist.tolist(), "R": self.R.tolist(), "t": self.t.tolist()}
        if self.image_size is not None:
            out["size"] = list(self.image_size)
        return out


# ---------------------------------------------------------------- validation

def _fail(source: str, view: Optional[str], field_name: str, message: str) -> CameraError:
    where = f"view '{view}': " if view is not None else ""
    return CameraError(f"{source}: {where}field '{field_name}' {message}")


def _array(value, source: str, view, field_name: str, shapes: tuple) -> np.ndarray:
    """``value`` as a finite float64 array with one of ``shapes`` (None in a shape: any length)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(source, view, field_name, f"must be numbers, got {_short(value)}") from None
    if not any(len(s) == arr.ndim and all(d is None or d == n for d, n in zip(s, arr.shape)) for s in shapes):
        want = " or ".join(str(s).replace("None", "k") for s in shapes)
        raise _fail(source, view, field_name, f"has shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        raise _fail(source, view, field_name, "must be finite (has NaN or inf)")
    return arr


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rodrigues(vec: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(vec, dtype=np.float64).reshape(3, 1))[0]


def _size(value, source: str, view, field_name: str) -> tuple[int, int]:
    arr = _array(value, source, view, field_name, ((2,),))
    if (arr <= 0).any() or (arr != np.round(arr)).any():
        raise _fail(source, view, field_name, f"(width, height) must be positive whole pixels, got {arr.tolist()}")
    return int(arr[0]), int(arr[1])


def make_calib(name: str, K, dist, R, t, image_size, *, source: str = "<memory>",
               fields: tuple = ("K", "dist", "R", "t", "image_size")) -> CameraCalib:
    """A checked :class:`CameraCalib` (the readers all end here).

    Args:
        K: (3, 3) pixels. dist: (k,) or (1, k)/(k, 1), k in (0, 4, 5, 8), or None (no distortion).
        R: (3, 3) rotation, world -> camera. t: (3,), (3, 1) or (1, 3) meters.
        image_size: (width, height) pixels or None (unknown).
        fields: the file's names for K, dist, R, t and image_size, used in errors.
    Raises:
        CameraError naming ``source``, the view and the field.
    """
    fk, fd, fr, ft, fs = fields
    K = _array(K, source, name, fk, ((3, 3),))
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise _fail(source, name, fk, f"focal lengths K[0,0], K[1,1] must be > 0, got {K[0, 0]:g}, {K[1, 1]:g}")
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise _fail(source, name, fk, f"must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    dist = np.zeros(0) if dist is None else _array(dist, source, name, fd, ((None,), (1, None), (None, 1)))
    dist = dist.reshape(-1)
    if len(dist) not in DIST_LENGTHS:
        raise _fail(source, name, fd, f"has {len(dist)} coefficients; supported: 4 (k1 k2 p1 p2), 5 (+k3) "
                                      f"or 8 (+k4 k5 k6), or none")
    R = _array(R, source, name, fr, ((3, 3),))
    ortho = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if ortho > ROTATION_TOL or abs(det - 1.0) > ROTATION_TOL:
        raise _fail(source, name, fr, f"is not a rotation matrix (max |R R^T - I| = {ortho:.3g}, "
                                      f"det = {det:.9g}; tolerance {ROTATION_TOL:g})")
    t = _array(t, source, name, ft, ((3,), (3, 1), (1, 3))).reshape(3)
    size = None if image_size is None else _size(image_size, source, name, fs)
    return CameraCalib(name=str(name), K=K, dist=dist, R=R, t=t, image_size=size, source=source)


# ---------------------------------------------------------------- readers

def _need(table: dict, key: str, source: str, view) -> object:
    if key not in table:
        raise _fail(source, view, key, "is missing")
    return table[key]


def _read_toml(path: Path) -> list[CameraCalib]:
    src = str(path)
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise CameraError(f"{src}: reading TOML needs Python 3.11+ or the 'tomli' package") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CameraError(f"{src}: not a valid TOML file ({exc})") from None
    cams = []
    for key, table in data.items():
        if key == "metadata" or not isinstance(table, dict):
            continue
        view = str(table.get("name", key))
        if table.get("fisheye", False) not in (False, 0):
            raise _fail(src, view, "fisheye", "is true; only OpenCV's pinhole lens model (k1 k2 p1 p2) is supported")
        rvec = _array(_need(table, "rotation", src, view), src, view, "rotation", ((3,),))
        cams.append(make_calib(view, _need(table, "matrix", src, view), _need(table, "distortions", src, view),
                               _rodrigues(rvec), _need(table, "translation", src, view),
                               _need(table, "size", src, view), source=src,
                               fields=("matrix", "distortions", "rotation", "translation", "size")))
    if not cams:
        raise CameraError(f"{src}: no camera tables (expected one table per camera with 'matrix', "
                          f"'distortions', 'rotation', 'translation', 'size')")
    return cams


def _xml_float(elem, attr: str, src: str, view, tag: str) -> float:
    text = elem.get(attr)
    if text is None:
        raise _fail(src, view, f"{tag}.{attr}", "is missing")
    try:
        value = float(text)
    except ValueError:
        raise _fail(src, view, f"{tag}.{attr}", f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _fail(src, view, f"{tag}.{attr}", f"must be finite, got {text!r}")
    return value


def _read_qca(path: Path) -> list[CameraCalib]:
    src = str(path)
    try:
        root = ET.fromstring(path.read_bytes())
    except ET.ParseError as exc:
        raise CameraError(f"{src}: not a valid Qualisys .qca XML file ({exc})") from None
    cams = []
    for i, cam in enumerate(root.findall("cameras/camera")):
        view = cam.get("serial")
        if not view:
            raise _fail(src, f"#{i}", "serial", "is missing (it names the view)")
        rotation = cam.get("viewrotation", "0")
        if rotation.strip() not in ("0", "0.0"):
            raise _fail(src, view, "viewrotation", f"is {rotation!r}; only unrotated views (0) are supported")
        elems = {}
        for tag in ("fov_video", "intrinsic", "transform"):
            elems[tag] = cam.find(tag)
            if elems[tag] is None:
                raise _fail(src, view, tag, "is missing")
        num = lambda tag, attr: _xml_float(elems[tag], attr, src, view, tag)  # noqa: E731
        left, top = num("fov_video", "left"), num("fov_video", "top")
        size = (num("fov_video", "right") - left + 1, num("fov_video", "bottom") - top + 1)
        s = QCA_SUBPIXELS
        skew = num("intrinsic", "skew") / s if elems["intrinsic"].get("skew") is not None else 0.0
        K = [[num("intrinsic", "focalLengthU") / s, skew, num("intrinsic", "centerPointU") / s - left],
             [0.0, num("intrinsic", "focalLengthV") / s, num("intrinsic", "centerPointV") / s - top],
             [0.0, 0.0, 1.0]]
        k3 = num("intrinsic", "radialDistortion3") if elems["intrinsic"].get("radialDistortion3") is not None else 0.0
        dist = np.array([num("intrinsic", "radialDistortion1"), num("intrinsic", "radialDistortion2"),
                         num("intrinsic", "tangentalDistortion1"), num("intrinsic", "tangentalDistortion2"),
                         k3]) / s
        rows = np.array([[num("transform", f"r{r}{c}") for c in (1, 2, 3)] for r in (1, 2, 3)])
        position = np.array([num("transform", a) for a in ("x", "y", "z")]) / 1000.0
        # The rows are the axes of a camera looking along -z with y up; OpenCV's
        # camera looks along +z with y down: negate the second and third axes.
        R = np.diag([1.0, -1.0, -1.0]) @ rows
        cams.append(make_calib(view, K, dist, R, -R @ position, size, source=src,
                               fields=("intrinsic", "intrinsic", "transform", "transform", "fov_video")))
    if not cams:
        raise CameraError(f"{src}: no 'cameras/camera' elements: not a Qualisys .qca calibration")
    return cams


def _storage(path: Path) -> "cv2.FileStorage":
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as exc:
        raise CameraError(f"{path}: cannot be read by cv2.FileStorage ({str(exc).strip().splitlines()[-1]})") from None
    if not fs.isOpened():
        raise CameraError(f"{path}: cannot be opened by cv2.FileStorage")
    return fs


def _node_value(fs, key: str):
    """The node ``key`` as a numpy array / float / str, or None when absent."""
    node = fs.getNode(key)
    if node.empty() or node.isNone():
        return None
    if node.isMap():
        mat = None if node.getNode("data").empty() else node.mat()
        return np.array([]) if mat is None else mat  # a map that is not an opencv-matrix: refused later
    if node.isSeq():
        return [_seq_item(node.at(i)) for i in range(node.size())]
    if node.isString():
        return node.string()
    return node.real()


def _seq_item(node):
    if node.isString():
        return node.string()
    if node.isInt():
        return int(node.real())
    return node.real()


def _first(fs, keys: tuple):
    for key in keys:
        value = _node_value(fs, key)
        if value is not None:
            return key, value
    return keys[0], None


def _rotation(value, src, view, key) -> np.ndarray:
    arr = _array(value, src, view, key, ((3, 3), (3,), (3, 1), (1, 3)))
    return arr if arr.shape == (3, 3) else _rodrigues(arr.reshape(3))


def _read_opencv(path: Path) -> list[CameraCalib]:
    src = str(path)
    fs = _storage(path)
    try:
        name = _node_value(fs, "name")
        view = name if isinstance(name, str) and name else path.name.split(".")[0]
        fk, K = _first(fs, ("camera_matrix", "K"))
        if K is None:
            raise _fail(src, view, "camera_matrix", "is missing (also looked for 'K')")
        fd, dist = _first(fs, ("dist_coeffs", "distortion_coefficients", "dist", "D"))
        fr, rot = _first(fs, ("rvec", "R"))
        ft, t = _first(fs, ("tvec", "T", "t"))
        if (rot is None) != (t is None):
            missing = fr if rot is None else ft
            raise _fail(src, view, missing, "is missing (rotation and translation come together; "
                                            "leave both out for a camera at the world origin)")
        R = np.eye(3) if rot is None else _rotation(rot, src, view, fr)
        t = np.zeros(3) if t is None else t
        width, height = _node_value(fs, "image_width"), _node_value(fs, "image_height")
        fs_, size = "image_size", _node_value(fs, "image_size")
        if size is None and (width is not None or height is not None):
            if width is None or height is None:
                raise _fail(src, view, "image_height" if height is None else "image_width", "is missing")
            fs_, size = "image_width", [width, height]
        if isinstance(size, np.ndarray):
            size = size.reshape(-1)  # an opencv-matrix (2, 1) or (1, 2)
    finally:
        fs.release()
    return [make_calib(view, K, dist, R, t, size, source=src, fields=(fk, fd, fr, ft, fs_))]


def _easymocap_names(fs, src: str) -> list[str]:
    names = _node_value(fs, "names")
    if names is None:
        raise _fail(src, None, "names", "is missing (EasyMocap files list their views under 'names')")
    if not isinstance(names, list) or not names:
        raise _fail(src, None, "names", f"must be a non-empty list of view names, got {_short(names)}")
    return [str(n) for n in names]


def _read_easymocap(path: Path) -> list[CameraCalib]:
    folder = path if path.is_dir() else path.parent
    intri_path, extri_path = folder / "intri.yml", folder / "extri.yml"
    for p in (intri_path, extri_path):
        if not p.is_file():
            raise CameraError(f"{p}: not found; EasyMocap calibrations are an intri.yml and an extri.yml "
                              f"in one folder")
    isrc, esrc = str(intri_path), str(extri_path)
    intri, extri = _storage(intri_path), _storage(extri_path)
    try:
        names = _easymocap_names(intri, isrc)
        extri_names = _easymocap_names(extri, esrc)
        missing = [n for n in names if n not in extri_names]
        if missing:
            raise _fail(esrc, missing[0], "names", f"lacks view(s) {missing} listed in {isrc}")
        cams = []
        for view in names:
            K = _node_value(intri, f"K_{view}")
            if K is None:
                raise _fail(isrc, view, f"K_{view}", "is missing")
            dist = _node_value(intri, f"dist_{view}")
            h, w = _node_value(intri, f"H_{view}"), _node_value(intri, f"W_{view}")
            size = None if h is None or w is None else [w, h]
            fr, rot = _first(extri, (f"Rot_{view}", f"R_{view}"))
            if rot is None:
                raise _fail(esrc, view, f"R_{view}", f"is missing (also looked for 'Rot_{view}')")
            R = _rotation(rot, esrc, view, fr)
            t = _node_value(extri, f"T_{view}")
            if t is None:
                raise _fail(esrc, view, f"T_{view}", "is missing")
            calib = make_calib(view, K, dist, np.eye(3), np.zeros(3), size, source=isrc,
                               fields=(f"K_{view}", f"dist_{view}", "", "", f"W_{view}"))
            extr = make_calib(view, np.eye(3), None, R, t, None, source=esrc,
                              fields=("", "", fr, f"T_{view}", ""))
            cams.append(replace(calib, R=extr.R, t=extr.t, source=f"{folder}"))
    finally:
        intri.release()
        extri.release()
    return cams


def _read_json(path: Path) -> list[CameraCalib]:
    src = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CameraError(f"{src}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CameraError(f"{src}: expected a JSON object with 'cameras' (or one camera's 'K', 'R', 't', 'size')")
    if "cameras" in data:
        cameras = data["cameras"]
        if not isinstance(cameras, dict) or not cameras:
            raise _fail(src, None, "cameras", "must be a non-empty object {view name: camera}")
    else:
        cameras = {path.name.split(".")[0]: data}
    cams = []
    for view, entry in cameras.items():
        if not isinstance(entry, dict):
            raise _fail(src, view, "cameras", f"entry must be an object with K, R, t, size, got {_short(entry)}")
        cams.append(make_calib(view, _need(entry, "K", src, view), entry.get("dist"), _need(entry, "R", src, view),
                               _need(entry, "t", src, view), _need(entry, "size", src, view), source=src,
                               fields=("K", "dist", "R", "t", "size")))
    return cams


def _is_plain_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and ("cameras" in data or isinstance(data.get("K"), list))


def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "easymocap"
    if name.endswith(".qca.txt") or name.endswith(".qca"):
        return "qca"
    if name.endswith(".toml"):
        return "toml"
    if name in ("intri.yml", "extri.yml"):
        return "easymocap"
    if name.endswith(".json"):
        return "json" if _is_plain_json(path) else "opencv"
    if name.endswith((".yml", ".yaml", ".xml")):
        head = path.read_bytes()[:4096].lstrip()
        if head.startswith(b"<?xml") and b"<calibration" in head:
            return "qca"
        return "opencv"
    head = path.read_bytes()[:512].lstrip()
    if head.startswith(b"<") and b"<calibration" in head:
        return "qca"
    raise CameraError(f"{path}: cannot tell the calibration format from the name; supported: "
                      f"{_formats_text()} (pass fmt=...)")


def _formats_text() -> str:
    return ("'toml' (pose2sim Calib*.toml), 'qca' (Qualisys .qca.txt), 'opencv' (cv2.FileStorage .yml/.yaml/"
            ".json/.xml), 'easymocap' (intri.yml + extri.yml or their folder), 'json' (fitkit's plain JSON)")


_READERS = {"toml": _read_toml, "qca": _read_qca, "opencv": _read_opencv, "easymocap": _read_easymocap,
            "json": _read_json}


def read_cameras(path, *, fmt: str = "auto") -> dict[str, CameraCalib]:
    """Every view of a calibration file, by name, in the file's order.

    Args:
        path: a calibration file (or, for EasyMocap, the folder holding
            intri.yml and extri.yml).
        fmt: ``"auto"`` or one of :data:`FORMATS` (see the module docstring).
    Returns:
        ``{name: CameraCalib}``.
    Raises:
        CameraError naming the file (and the view and field where one is at fault).
    """
    path = Path(path)
    if fmt not in ("auto",) + FORMATS:
        raise CameraError(f"{path}: unknown calibration format {fmt!r}; supported: 'auto', {_formats_text()}")
    if not path.exists():
        raise CameraError(f"{path}: calibration file not found")
    if fmt == "auto":
        fmt = _detect_format(path)
    elif path.is_dir() and fmt != "easymocap":
        raise CameraError(f"{path}: is a folder; only fmt='easymocap' reads a folder (intri.yml + extri.yml)")
    cams = _READERS[fmt](path)
    out: dict[str, CameraCalib] = {}
    for cam in cams:
        if cam.name in out:
            raise CameraError(f"{path}: view name {cam.name!r} appears twice")
        out[cam.name] = cam
    log.info("%s: %d camera(s) read as %s: %s", path, len(out), fmt, ", ".join(out))
    return out


def read_camera(path, view: Optional[str] = None, *, fmt: str = "auto") -> CameraCalib:
    """One view of a calibration file: ``view`` by name, or the only one.

    Raises:
        CameraError listing the file's view names when ``view`` is not among
        them, or when it is None and the file holds several views.
    """
    cams = read_cameras(path, fmt=fmt)
    names = ", ".join(repr(n) for n in cams)
    if view is None:
        if len(cams) == 1:
            return next(iter(cams.values()))
        raise CameraError(f"{path}: holds {len(cams)} views ({names}); choose one (--view NAME)")
    if view not in cams:
        raise CameraError(f"{path}: no view named {view!r}; the views are {names}")
    return cams[view]


def write_cameras_json(path, cameras: dict[str, CameraCalib], **extra) -> Path:
    """Write ``cameras`` in the plain JSON format (plus top-level ``extra`` entries, e.g. provenance)."""
    path = Path(path)
    # One line per field keeps the file readable and diffable; floats keep full precision (repr).
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in extra.items()] + [' "cameras": {']
    for i, (name, cam) in enumerate(cameras.items()):
        body = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in cam.to_json().items())
        lines.append(f"  {json.dumps(name)}: {{\n{body}\n  }}" + ("," if i < len(cameras) - 1 else ""))
    lines += [" }", "}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- lens distortion

def _as_numpy(points):
    if isinstance(points, torch.Tensor):
        return points.detach().cpu().numpy().astype(np.float64), points
    return np.asarray(points, dtype=np.float64), None


def _like(arr: np.ndarray, ref):
    if ref is None:
        return arr
    return torch.as_tensor(arr, dtype=ref.dtype, device=ref.device)


def undistort_points(points_px, calib: CameraCalib):
    """Remove the lens distortion from pixel coordinates, keeping K.

    Args:
        points_px: (..., 2) x, y or (..., 3) x, y, confidence in pixels
            (e.g. (N, K, 3) keypoints), a numpy array or a torch tensor.
        calib: the camera.
    Returns:
        The same shape and type: x, y moved to where an ideal pinhole camera
        with the same K would see them (``cv2.undistortPointsIter`` with
        P = K, iterated to 1e-12 in normalised coordinates); confidences
        unchanged. Points with a NaN/inf coordinate or a confidence <= 0 are
        returned untouched. Without distortion the input comes back as is.
        The skew K[0, 1] is honoured (OpenCV's own functions ignore it).
    """
    arr, ref = _as_numpy(points_px)
    if arr.ndim < 1 or arr.shape[-1] not in (2, 3):
        raise CameraError(f"undistort_points: points must have shape (..., 2) or (..., 3), got {arr.shape}")
    if not calib.has_distortion:
        return points_px
    out = arr.copy()
    flat = out.reshape(-1, arr.shape[-1])
    ok = np.isfinite(flat[:, :2]).all(axis=1)
    if arr.shape[-1] == 3:
        ok &= flat[:, 2] > 0
    if ok.any():
        # Normalise with the full K ourselves: OpenCV's undistortion ignores the skew K[0, 1].
        K = calib.K
        pts = flat[ok, :2]
        y = (pts[:, 1] - K[1, 2]) / K[1, 1]
        x = (pts[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        src = np.stack([x, y], axis=-1).reshape(-1, 1, 2)
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4
            und = cv2.undistortPointsIter(src, np.eye(3), calib.dist, np.eye(3), np.eye(3), criteria)
        else:  # OpenCV 5: undistortPoints takes the criteria
            und = cv2.undistortPoints(src, np.eye(3), calib.dist, R=np.eye(3), P=np.eye(3), criteria=criteria)
        x, y = und.reshape(-1, 2).T
        flat[ok, 0] = K[0, 0] * x + K[0, 1] * y + K[0, 2]
        flat[ok, 1] = K[1, 1] * y + K[1, 2]
    return _like(out, ref)


def project_points(world_points, calib: CameraCalib, distort: bool = True):
    """Project world points through the camera (OpenCV's lens model, own numpy code).

    Unlike ``cv2.projectPoints``, the skew K[0, 1] is applied (as in
    :func:`fitkit.camera.project`); with zero skew the two agree.

    Args:
        world_points: (..., 3) meters in world coordinates (numpy or torch).
        distort: apply the lens distortion (False: the pinhole K only).
    Returns:
        (..., 2) pixels, same type as the input; NaN for points with depth <= 0.
    """
    arr, ref = _as_numpy(world_points)
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise CameraError(f"project_points: world_points must have shape (..., 3), got {arr.shape}")
    cam = arr @ calib.R.T + calib.t
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cam[..., 0] / z, cam[..., 1] / z
    if distort and calib.has_distortion:
        d = np.zeros(8)
        d[: len(calib.dist)] = calib.dist
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    K = calib.K
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=-1)
    uv[z <= 0] = np.nan
    return _like(uv, ref)


# ---------------------------------------------------------------- observations

def apply_camera(obs, calib: CameraCalib):
    """Observations seen through a calibrated camera, ready for the pinhole fit.

    The keypoints are undistorted (:func:`undistort_points`; unobserved ones
    untouched), every frame's intrinsics become ``calib.K``, and the
    extrinsics are recorded as ``extrinsics`` (N, 4, 4) world -> camera
    (``calib.world_to_camera`` for every frame). 3D keypoints, boxes and
    dense cues are left as they are (a warning is logged when dense cues
    meet a distorting lens: they stay in the distorted image).

    Args:
        obs: :class:`~fitkit.io.observations.Observations`.
        calib: the view the keypoints were detected in.
    Returns:
        A new Observations (``obs`` is not modified).
    Raises:
        CameraError when the camera's image size differs from the keypoints'
        (naming the calibration file, the view and both sizes).
    """
    from fitkit.io.observations import Observations

    if not isinstance(obs, Observations):
        raise CameraError(f"apply_camera: expected Observations, got {type(obs).__name__}")
    if not isinstance(calib, CameraCalib):
        raise CameraError(f"apply_camera: expected a CameraCalib, got {type(calib).__name__}")
    sizes = obs.image_size.detach().cpu().double().numpy()
    if calib.image_size is None:
        log.warning("%s: view '%s' has no image size; the keypoints' image size is not checked against it",
                    calib.source, calib.name)
    else:
        bad = np.flatnonzero((sizes != np.asarray(calib.image_size, dtype=np.float64)).any(axis=1))
        if len(bad):
            w, h = sizes[bad[0]]
            raise CameraError(f"{calib.source}: view '{calib.name}' is {calib.image_size[0]}x"
                              f"{calib.image_size[1]} pixels (width x height) but the keypoints of "
                              f"{obs.source} are on a {w:g}x{h:g} image (frame {int(bad[0])}; "
                              f"{len(bad)} frame(s) differ): wrong camera or view?")
    if obs.dense and calib.has_distortion:
        log.warning("%s: dense cues %s are not undistorted; only the keypoints are",
                    obs.source, sorted(obs.dense))
    n = len(obs)
    if obs.intrinsics is not None:
        old_k = obs.intrinsics.detach().cpu().double().numpy()
        if not np.allclose(old_k, calib.K, rtol=1e-6, atol=1e-6):
            log.warning("%s: the observations' own intrinsics are replaced by view '%s' of %s",
                        obs.source, calib.name, calib.source)
    kp = undistort_points(obs.keypoints, calib)
    ref = obs.keypoints
    K = torch.as_tensor(calib.K, dtype=ref.dtype, device=ref.device).expand(n, 3, 3).clone()
    extr = torch.as_tensor(calib.world_to_camera, dtype=ref.dtype, device=ref.device).expand(n, 4, 4).clone()
    return replace(obs, keypoints=kp, intrinsics=K, extrinsics=extr)
