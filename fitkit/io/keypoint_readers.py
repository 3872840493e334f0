"""Readers that turn common 2D-keypoint files into :class:`~fitkit.io.observations.Observations`.

* :func:`read_openpose_folder` -- OpenPose ``*_keypoints.json`` (BODY_25), one file per frame.
* :func:`read_coco_json` -- COCO / COCO-WholeBody keypoint annotations, or a
  COCO "results" list; always returned as ``coco25``.
* :func:`read_keypoint_array` -- a bare ``.npy`` array (N, K, 3) or (N, K, 2).
* :func:`read_keypoints` -- picks one of the above (or
  :func:`~fitkit.io.observations.load_observations`) from what the path is.

Every reader keeps one person per frame, chosen by ``person``:

* ``'largest'``: the person whose confident keypoints (confidence > 0) span
  the largest box (ties: the earlier one). Chosen per frame, so with several
  people of similar size the choice can switch between frames: these files
  carry no identity tracking.
* ``'first'``: the first person listed.
* an int ``i >= 0``: the i-th person listed; frames with fewer people get no
  evidence (all confidences 0).
* ``'score'`` (COCO only): the highest ``score``.

Frames without any person become frames with all confidences 0 (no
evidence); the fitting engine flags them and passes their initialisation
through. All values go through ``Observations.from_arrays``, so the
validation policy of :mod:`fitkit.io.observations` applies (NaN keypoints
repaired with a warning, everything else malformed raises
:class:`~fitkit.errors.ObservationError` naming the file and the field).

Pixel conventions: OpenPose and COCO keypoint coordinates are taken as they
are (integer coordinates at pixel centres, fitkit's convention). COCO boxes
``[x, y, w, h]`` use continuous coordinates with the image's top-left
*corner* at (0, 0), so they are shifted by -0.5 px into fitkit's
``x0, y0, x1, y1``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.errors import ObservationError
from fitkit.io.observations import Observations, load_observations

PersonChoice = Union[str, int]

_OPENPOSE_SUFFIX = "_keypoints.json"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_COCO_BODY = 17
_COCO_FEET = 6
#: Accepted numbers of points in a COCO ``keypoints`` list: COCO-17,
#: COCO-17 + 6 feet, COCO-WholeBody's 133 (body, feet, face, hands).
_COCO_LENGTHS = (17, 23, 133)


def _fail(source, field: str, message: str) -> ObservationError:
    return ObservationError(f"{source}: field '{field}' {message}")


def _check_person(person, allow_score: bool) -> PersonChoice:
    names = ("largest", "first", "score") if allow_score else ("largest", "first")
    if isinstance(person, str) and person in names:
        return person
    if isinstance(person, (int, np.integer)) and not isinstance(person, bool) and person >= 0:
        return int(person)
    raise ObservationError(f"person must be one of {names} or an int >= 0, got {person!r}")


def _spread(points: np.ndarray) -> float:
    """Area of the box around the confident points of a (K, 3) array; -1 if none."""
    ok = (points[:, 2] > 0) & np.isfinite(points).all(axis=1)
    if not ok.any():
        return -1.0
    xy = points[ok, :2]
    w, h = xy.max(axis=0) - xy.min(axis=0)
    return float(w * h)


def _choose(people: list[np.ndarray], person: PersonChoice, scores: Optional[list] = None) -> Optional[int]:
    """Index of the chosen person, or None for no evidence."""
    if not people:
        return None
    if person == "first":
        return 0
    if isinstance(person, int):
        return person if person < len(people) else None
    if person == "score" and scores is not None and all(s is not None for s in scores):
        return int(np.argmax(scores))
    spreads = [_spread(p) for p in people]
    return int(np.argmax(spreads))  # argmax keeps the first of equal values


def _number_list(values, source, field: str) -> np.ndarray:
    if not isinstance(values, list):
        raise _fail(source, field, f"must be a list of numbers, got {type(values).__name__}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        bad = next(v for v in values if not (isinstance(v, (int, float)) and not isinstance(v, bool)))
        raise _fail(source, field, f"must hold only numbers, found {bad!r}")
    return np.asarray(values, dtype=np.float64)


def _read_json(path: Path):
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ObservationError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ObservationError(f"{path}: malformed JSON ({exc})") from None


def _size_rows(image_size, keys: list, source, key_name: str) -> Optional[np.ndarray]:
    """(N, 2) sizes from None, one (w, h), an (N, 2) array or a mapping key -> (w, h)."""
    if image_size is None:
        return None
    if isinstance(image_size, Mapping):
        missing = [k for k in keys if k not in image_size]
        if missing:
            raise ObservationError(f"{source}: image_size mapping has no entry for {key_name} {missing[0]!r}")
        return np.asarray([image_size[k] for k in keys], dtype=np.float64)
    if isinstance(image_size, torch.Tensor):
        image_size = image_size.detach().cpu().numpy()
    return np.asarray(image_size, dtype=np.float64)  # shape checked by from_arrays


# ---------------------------------------------------------------- OpenPose

def _openpose_people(path: Path, k: int) -> list[np.ndarray]:
    data = _read_json(path)
    if not isinstance(data, dict) or "people" not in data:
        raise _fail(path, "people", "is missing; not an OpenPose keypoints file")
    people = data["people"]
    if not isinstance(people, list):
        raise _fail(path, "people", f"must be a list, got {type(people).__name__}")
    out = []
    for i, entry in enumerate(people):
        field = f"people[{i}].pose_keypoints_2d"
        if not isinstance(entry, dict) or "pose_keypoints_2d" not in entry:
            raise _fail(path, field, "is missing")
        values = _number_list(entry["pose_keypoints_2d"], path, field)
        if len(values) != 3 * k:
            hint = " (OpenPose COCO-18 output is not supported; run OpenPose with BODY_25)" if len(values) == 54 else ""
            raise _fail(path, field, f"has {len(values)} numbers, expected {3 * k} ({k} BODY_25 points x 3){hint}")
        out.append(values.reshape(k, 3))
    return out


def _find_image(folder: Path, stem: str) -> Optional[Path]:
    for suffix in _IMAGE_SUFFIXES:
        for name in (stem + suffix, stem + suffix.upper()):
            if (folder / name).is_file():
                return folder / name
    return None


def _image_sizes_from_files(paths: list[str], source) -> np.ndarray:
    import cv2

    sizes = []
    for p in paths:
        if not p:
            raise ObservationError(f"{source}: image_size not given and no image found for a frame "
                                   f"(looked for {', '.join(_IMAGE_SUFFIXES)})")
        img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ObservationError(f"{p}: cannot read the image to get its size")
        sizes.append((img.shape[1], img.shape[0]))
    return np.asarray(sizes, dtype=np.float64)


def _read_openpose_files(files: list[Path], source: str, *, image_size, person, image_folder,
                         dtype) -> Observations:
    fmt = get_format("body25")
    person = _check_person(person, allow_score=False)
    frame_ids = [f.name[: -len(_OPENPOSE_SUFFIX)] if f.name.endswith(_OPENPOSE_SUFFIX) else f.stem
                 for f in files]
    keypoints = np.zeros((len(files), fmt.num_keypoints, 3))
    for n, path in enumerate(files):
        people = _openpose_people(path, fmt.num_keypoints)
        chosen = _choose(people, person)
        if chosen is not None:
            keypoints[n] = people[chosen]
    image_paths = None
    if image_folder is not None:
        found = [_find_image(Path(image_folder), fid) for fid in frame_ids]
        image_paths = ["" if p is None else str(p) for p in found]
    else:
        # OpenPose writes <name>_keypoints.json for <name>.png/.jpg: use such images when they sit beside the json
        found = [_find_image(f.parent, fid) for f, fid in zip(files, frame_ids)]
        if any(p is not None for p in found):
            image_paths = ["" if p is None else str(p) for p in found]
    sizes = _size_rows(image_size, frame_ids, source, "frame")
    if sizes is None:
        if image_paths is None:
            raise ObservationError(f"{source}: image_size is required (OpenPose files do not store it): "
                                   f"give (width, height), one per frame, a mapping frame id -> (w, h), "
                                   f"or image_folder to read it from the images")
        sizes = _image_sizes_from_files(image_paths, source)
    return Observations.from_arrays(keypoints, fmt.name, sizes, frame_ids=frame_ids,
                                    image_paths=image_paths, source=source, dtype=dtype)


def read_openpose_folder(folder, *, image_size=None, person: PersonChoice = "largest",
                         format: str = "body25", image_folder=None,
                         dtype: torch.dtype = torch.float32) -> Observations:
    """Read a folder of OpenPose ``*_keypoints.json`` files, one frame per file.

    Files are taken in sorted name order; a frame's id is its file name without
    ``_keypoints.json``. Each file holds ``{"people": [{"pose_keypoints_2d":
    [x, y, c] * 25, ...}, ...]}``; only BODY_25 (75 numbers) is accepted.

    Args:
        folder: the folder holding the JSON files.
        image_size: (width, height) for all frames, an (N, 2) array in file
            order, or a mapping frame id -> (w, h). Required unless
            ``image_folder`` is given (sizes are then read from the images).
        person: 'largest', 'first' or an int (see the module docstring).
        format: must name BODY_25 ('body25' or an alias).
        image_folder: optional folder of the frames' images, named
            ``<frame id>.png/.jpg/...``; fills ``image_paths`` ('' when missing).
            Without it, images named so beside the json files are used (OpenPose's
            ``<name>_keypoints.json`` next to ``<name>.png``); ``image_paths`` is
            None when there are none.
        dtype: floating dtype of the tensors.
    Raises:
        ObservationError naming the file and the field for malformed JSON,
        a missing ``people`` list, or a keypoint list of the wrong length.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ObservationError(f"{folder}: not a folder of OpenPose *{_OPENPOSE_SUFFIX} files")
    try:
        fmt = get_format(format)
    except ValueError as exc:
        raise ObservationError(f"{folder}: {exc}") from None
    if fmt.name != "body25":
        raise ObservationError(f"{folder}: OpenPose reading supports only BODY_25, got format {format!r}")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(_OPENPOSE_SUFFIX) and p.is_file()),
                   key=lambda p: p.name)
    if not files:
        raise ObservationError(f"{folder}: no *{_OPENPOSE_SUFFIX} files in the folder")
    return _read_openpose_files(files, str(folder), image_size=image_size, person=person,
                                image_folder=image_folder, dtype=dtype)


# ---------------------------------------------------------------- COCO

def _coco_images(images, source) -> list[dict]:
    """Validated list of {'id', 'file_name', 'width', 'height'} (the last three may be None)."""
    if isinstance(images, (str, Path)):
        data = _read_json(Path(images))
        source = str(images)
        if not isinstance(data, dict) or "images" not in data:
            raise _fail(source, "images", "is missing")
        images = data["images"]
    if not isinstance(images, list):
        raise _fail(source, "images", f"must be a list, got {type(images).__name__}")
    out, seen = [], set()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            raise _fail(source, f"images[{i}].id", "is missing")
        if img["id"] in seen:
            raise _fail(source, f"images[{i}].id", f"repeats image id {img['id']!r}")
        seen.add(img["id"])
        width, height = img.get("width"), img.get("height")
        for name, value in (("width", width), ("height", height)):
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise _fail(source, f"images[{i}].{name}", f"must be a number, got {value!r}")
        file_name = img.get("file_name")
        if file_name is not None and not isinstance(file_name, str):
            raise _fail(source, f"images[{i}].file_name", f"must be a string, got {file_name!r}")
        out.append({"id": img["id"], "file_name": file_name, "width": width, "height": height})
    return out


def _coco_points(entry: dict, index: int, source, feet: bool, annotation: bool) -> np.ndarray:
    """(23, 3) x, y, confidence of one COCO annotation or result."""
    field = f"{'annotations' if annotation else 'results'}[{index}].keypoints"
    if "keypoints" not in entry:
        raise _fail(source, field, "is missing")
    values = _number_list(entry["keypoints"], source, field)
    if len(values) % 3 or len(values) // 3 not in _COCO_LENGTHS:
        raise _fail(source, field, f"has {len(values)} numbers, expected 3 x one of {_COCO_LENGTHS} "
                                   f"(COCO-17, COCO-17 + feet, COCO-WholeBody)")
    pts = values.reshape(-1, 3)
    out = np.zeros((_COCO_BODY + _COCO_FEET, 3))
    out[:_COCO_BODY] = pts[:_COCO_BODY]
    if feet:
        if "foot_kpts" in entry:
            foot_field = field.replace("keypoints", "foot_kpts")
            foot = _number_list(entry["foot_kpts"], source, foot_field)
            if len(foot) != 3 * _COCO_FEET:
                raise _fail(source, foot_field, f"has {len(foot)} numbers, expected {3 * _COCO_FEET}")
            out[_COCO_BODY:] = foot.reshape(_COCO_FEET, 3)
        elif len(pts) >= _COCO_BODY + _COCO_FEET:
            out[_COCO_BODY:] = pts[_COCO_BODY:_COCO_BODY + _COCO_FEET]
    if annotation:
        v = out[:, 2]
        if (v < 0).any():
            raise _fail(source, field, f"has negative visibility flags {v[v < 0].tolist()}")
        # v = 0: not labelled; v = 1 (labelled, hidden) and v = 2 (visible) count as observed.
        out[:, 2] = np.where(np.isfinite(v), (v > 0).astype(np.float64), v)
    return out


def _coco_bbox(entry: dict) -> Optional[np.ndarray]:
    box = entry.get("bbox")
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in box)):
        return None
    x, y, w, h = box
    if w < 0 or h < 0:
        return None
    return np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5])


def read_coco_json(path, *, keypoint_format: str = "coco25", person: PersonChoice = "largest",
                   image_size=None, images=None, image_root=None,
                   dtype: torch.dtype = torch.float32) -> Observations:
    """Read COCO-style keypoints into 'coco25' Observations, one frame per image.

    Two layouts are accepted:

    * annotation files: ``{"images": [{id, file_name, width, height}], "annotations":
      [{image_id, keypoints: [x, y, v] * 17, foot_kpts?: [x, y, v] * 6, bbox?: [x, y, w, h],
      iscrowd?}]}``. Visibility v = 0 gives confidence 0, v > 0 (1 or 2)
      confidence 1. Crowd annotations (``iscrowd`` = 1) are skipped.
    * result files: a plain list of ``{image_id, keypoints: [x, y, c] * 17, score?, bbox?}``
      where c is already a confidence in [0, 1]. Image information comes from
      ``images`` (a list of COCO image dicts or the path of a COCO JSON holding
      them) and/or ``image_size``; without ``images`` the frames are the
      distinct image ids in sorted order and a frame's id is ``str(image_id)``.

    ``keypoints`` may hold 17, 23 (17 + feet) or 133 (COCO-WholeBody) points;
    feet come from ``foot_kpts`` when present, else from points 17-22.

    Args:
        keypoint_format: 'coco25' (read feet when present; absent feet get
            confidence 0) or 'coco17' (ignore any feet). The result is always 'coco25'.
        person: 'largest', 'first', 'score' (highest ``score``; falls back to
            'largest' when an image's entries lack scores) or an int.
        image_size: (width, height) for all images, an (N, 2) array in image
            order, or a mapping image id -> (w, h); overrides the images' own sizes.
        images: image list for result files (ignored for annotation files).
        image_root: folder that ``file_name`` is relative to, for ``image_paths``.
        dtype: floating dtype of the tensors.

    Frames are the images in the order of the image list; ``frame_ids`` are
    the ``file_name`` stems and ``image_paths`` the ``file_name`` values
    (joined to ``image_root``). Images without an annotation get no evidence.
    ``bbox`` is filled only if every frame's chosen person has a box.
    """
    path = Path(path)
    src = str(path)
    person = _check_person(person, allow_score=True)
    if keypoint_format not in ("coco25", "coco17"):
        try:
            canonical = get_format(keypoint_format).name
        except ValueError:
            canonical = None
        if canonical != "coco25":
            raise ObservationError(f"{src}: keypoint_format must be 'coco25' or 'coco17', got {keypoint_format!r}")
        keypoint_format = "coco25"
    feet = keypoint_format == "coco25"
    data = _read_json(path)

    if isinstance(data, dict):
        if "annotations" not in data:
            raise _fail(src, "annotations", "is missing; not a COCO keypoint annotation file")
        if "images" not in data:
            raise _fail(src, "images", "is missing; a COCO annotation file needs its image list")
        image_list = _coco_images(data["images"], src)
        entries = data["annotations"]
        annotation = True
        if not isinstance(entries, list):
            raise _fail(src, "annotations", f"must be a list, got {type(entries).__name__}")
    elif isinstance(data, list):
        entries = data
        annotation = False
        image_list = None if images is None else _coco_images(images, src)
    else:
        raise ObservationError(f"{src}: expected a COCO annotation object or a list of results, "
                               f"got {type(data).__name__}")

    label = "annotations" if annotation else "results"
    by_image: dict = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image_id" not in entry:
            raise _fail(src, f"{label}[{i}].image_id", "is missing")
        if entry.get("iscrowd", 0):
            continue
        points = _coco_points(entry, i, src, feet, annotation)
        score = entry.get("score")
        if score is not None and not (isinstance(score, (int, float)) and not isinstance(score, bool)):
            raise _fail(src, f"{label}[{i}].score", f"must be a number, got {score!r}")
        by_image.setdefault(entry["image_id"], []).append((points, score, _coco_bbox(entry)))

    if image_list is None:
        try:
            ids = sorted(by_image)
        except TypeError:
            ids = sorted(by_image, key=str)
        if not ids:
            raise ObservationError(f"{src}: no results and no images given")
        image_list = [{"id": i, "file_name": None, "width": None, "height": None} for i in ids]
    else:
        known = {img["id"] for img in image_list}
        stray = [i for i in by_image if i not in known]
        if stray:
            raise _fail(src, f"{label}.image_id", f"{stray[0]!r} is not in the image list")
    if not image_list:
        raise _fail(src, "images", "is empty")

    ids = [img["id"] for img in image_list]
    n = len(ids)
    keypoints = np.zeros((n, _COCO_BODY + _COCO_FEET, 3))
    boxes: list = []
    for f, image_id in enumerate(ids):
        people = by_image.get(image_id, [])
        chosen = _choose([p[0] for p in people], person, [p[1] for p in people])
        if chosen is None:
            boxes.append(None)
            continue
        keypoints[f] = people[chosen][0]
        boxes.append(people[chosen][2])

    sizes = _size_rows(image_size, ids, src, "image id")
    if sizes is None:
        missing = [img["id"] for img in image_list if img["width"] is None or img["height"] is None]
        if missing:
            raise ObservationError(f"{src}: no width/height for image id {missing[0]!r}; "
                                   f"give image_size or images with width and height")
        sizes = np.asarray([(img["width"], img["height"]) for img in image_list], dtype=np.float64)

    names = [img["file_name"] for img in image_list]
    if all(name is not None for name in names):
        frame_ids = [Path(name).stem for name in names]
        image_paths = [str(Path(image_root) / name) if image_root is not None else name for name in names]
    else:
        frame_ids = [str(i) for i in ids]
        image_paths = None
    bbox = np.stack(boxes) if all(b is not None for b in boxes) else None
    return Observations.from_arrays(keypoints, "coco25", sizes, bbox=bbox, frame_ids=frame_ids,
                                    image_paths=image_paths, source=src, dtype=dtype)


# ---------------------------------------------------------------- arrays and dispatch

def read_keypoint_array(path, keypoint_format: str, image_size, *, intrinsics=None,
                        frame_ids: Optional[Sequence[str]] = None,
                        image_paths: Optional[Sequence[str]] = None,
                        dtype: torch.dtype = torch.float32) -> Observations:
    """Read a ``.npy`` keypoint array (``np.load(allow_pickle=False)``).

    Args:
        path: file holding (N, K, 3) x, y, confidence or (N, K, 2) x, y
            (confidence 1 for every point).
        keypoint_format: name or alias; K must match it.
        image_size: (width, height) for all frames or (N, 2).
        intrinsics, frame_ids, image_paths: as in ``Observations.from_arrays``.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ObservationError(f"{src}: keypoint array file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ObservationError(f"{src}: cannot read as a .npy array without pickles ({exc})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise ObservationError(f"{src}: is a .npz archive; use load_observations for fitkit observation files")
    if arr.ndim == 3 and arr.shape[2] == 2 and arr.dtype.kind in "fiu":
        arr = np.concatenate([arr.astype(np.float64), np.ones(arr.shape[:2] + (1,))], axis=2)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise _fail(src, "keypoints", f"has shape {arr.shape}, expected (N, K, 3) or (N, K, 2)")
    return Observations.from_arrays(arr, keypoint_format, image_size, intrinsics=intrinsics,
                                    frame_ids=frame_ids, image_paths=image_paths, source=src, dtype=dtype)


def read_keypoints(path, *, keypoint_format: Optional[str] = None, image_size=None,
                   person: PersonChoice = "largest", dtype: torch.dtype = torch.float32,
                   **kwargs) -> Observations:
    """Read observations from whatever ``path`` is.

    * a folder: OpenPose ``*_keypoints.json`` files (:func:`read_openpose_folder`);
    * a ``.json`` file: one OpenPose frame if it holds a ``people`` list, else
      COCO (:func:`read_coco_json`);
    * a ``.npy`` file: :func:`read_keypoint_array` (needs ``keypoint_format`` and ``image_size``);
    * a ``.npz`` file: :func:`~fitkit.io.observations.load_observations`.

    ``keypoint_format``, ``image_size``, ``person`` and ``dtype`` are accepted
    for every kind of input, so a command line can pass them without knowing
    the kind: ``keypoint_format`` is the OpenPose ``format``, the COCO
    ``keypoint_format`` or the array's format; for a ``.npz`` file, a
    ``keypoint_format`` or ``image_size`` that disagrees with the file raises
    ObservationError (``person`` is ignored there, the file holds one person
    per frame). Other keyword arguments go to the chosen reader.
    """
    path = Path(path)
    if path.is_dir():
        return read_openpose_folder(path, image_size=image_size, person=person,
                                    format=keypoint_format or "body25", dtype=dtype, **kwargs)
    if not path.exists():
        raise ObservationError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and "people" in data:
            fmt = keypoint_format or "body25"
            try:
                fmt_name = get_format(fmt).name
            except ValueError as exc:
                raise ObservationError(f"{path}: {exc}") from None
            if fmt_name != "body25":
                raise ObservationError(f"{path}: OpenPose reading supports only BODY_25, got format {fmt!r}")
            return _read_openpose_files([path], str(path), image_size=image_size, person=person,
                                        dtype=dtype, image_folder=kwargs.pop("image_folder", None), **kwargs)
        return read_coco_json(path, keypoint_format=keypoint_format or "coco25", image_size=image_size,
                              person=person, dtype=dtype, **kwargs)
    if suffix == ".npy":
        if keypoint_format is None or image_size is None:
            raise ObservationError(f"{path}: a bare keypoint array needs keypoint_format and image_size")
        return read_keypoint_array(path, keypoint_format, image_size, dtype=dtype, **kwargs)
    if suffix == ".npz":
        obs = load_observations(path, dtype=dtype, **kwargs)
        if keypoint_format is not None:
            try:
                wanted = get_format(keypoint_format).name
            except ValueError as exc:
                raise ObservationError(f"{path}: {exc}") from None
            if wanted != obs.keypoint_format:
                raise ObservationError(f"{path}: field 'keypoint_format' is '{obs.keypoint_format}' "
                                       f"but keypoint_format={keypoint_format!r} was asked for")
        if image_size is not None:
            given = np.asarray(image_size, dtype=np.float64)
            have = obs.image_size.cpu().numpy()
            try:
                same = bool(np.all(np.broadcast_to(given, have.shape) == have))
            except ValueError:
                same = False
            if not same:
                raise ObservationError(f"{path}: field 'image_size' differs from the image_size given "
                                       f"({np.asarray(image_size).tolist()})")
        return obs
    raise ObservationError(f"{path}: cannot tell the keypoint file type from suffix {path.suffix!r} "
                           f"(expected a folder, .json, .npy or .npz)")
