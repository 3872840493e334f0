"""`fitkit report`: one self-contained HTML page per fit folder, checked in headless Chromium."""
from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from fitkit.cli import main
from fitkit.io.params import load_result
from fitkit.viz.report import spread_rows, write_report

from .fit_folders import IMAGE_SIZE, make_fit_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is not installed "
                                    "(Debian: apt-get install chromium); the page is not rendered")


@pytest.fixture(scope="module")
def images_fit(tmp_path_factory):
    """4 single images, fitted with --overlays (the report reuses OUT/overlays)."""
    return make_fit_folder(tmp_path_factory.mktemp("report_images"), video=False, overlays=True)


@pytest.fixture(scope="module")
def video_fit(tmp_path_factory):
    """Two tracks of 3 frames with images beside the observation file; row 4 has no evidence; no overlays."""
    return make_fit_folder(tmp_path_factory.mktemp("report_video"), video=True, overlays=False, frames=6,
                           seed=5, empty_frame=4)


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of each summary-table row."""

    def __init__(self):
        super().__init__()
        self.tags, self.rows, self._row, self._in_summary = [], {}, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and attrs.get("class") == "summary":
            self._in_summary = True
        if self._in_summary and tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_summary = False
        if tag == "tr" and self._row is not None:
            if len(self._row) == 2:
                self.rows[self._row[0]] = self._row[1]
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(uri: str) -> np.ndarray:
    import cv2

    head, data = uri.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _decode_png_texture(i: int) -> np.ndarray:
    """Frame i's input picture (written by make_fit_folder) shrunk as the report shrinks it."""
    import cv2

    from .fit_folders import _texture

    return cv2.resize(_texture(i), (140, 105), interpolation=cv2.INTER_AREA).astype(int)


def _assert_self_contained(text: str) -> None:
    assert "<script" not in text and "<link" not in text and "@import" not in text
    # the only URL is the SVG namespace name, which is never fetched
    urls = set(re.findall(r"https?://[^\s'\"<>]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    for src in re.findall(r"src=['\"]([^'\"]*)", text):
        assert src.startswith("data:image/"), src[:60]


def test_report_of_single_images(images_fit):
    out, obs_path = images_fit
    summary = write_report(out)
    path = out / "report.html"
    assert summary["path"] == str(path) and path.is_file()
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    res = load_result(out / "result.npz")
    ids = [str(f) for f in res["frame_ids"]]
    assert all(f in text for f in ids)
    page = _parse(path)
    # the summary table agrees with counts taken from result.npz here
    n = len(ids)
    assert page.rows["frames"] == str(n)
    assert page.rows["quality_ok"] == f"{int(res['quality_ok'].sum())} / {n}"
    assert page.rows["converged"] == f"{int(res['converged'].sum())} / {n}"
    assert page.rows["no evidence"] == f"0 / {n}"
    e = res["err2d_px"].astype(np.float64)
    assert page.rows["2D error mean / median (px)"] == f"{e.mean():.2f} / {np.median(e):.2f}"
    assert page.rows["recipe"] == "demo" and page.rows["observations"] == str(obs_path.resolve())
    assert float(page.rows["fit time"].split()[0]) == pytest.approx(float(res["fit_seconds"]), abs=0.05)
    # every frame shown (4 <= 8): its existing overlay, at the fit's image size, and two views
    assert summary["overlays"] == "existing" and summary["shown_frames"] == ids
    figures = [a["data-frame"] for t, a in page.tags if t == "figure" and "data-frame" in a]
    assert figures == ids
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 3 * n
    overlay = _decode(next(a["src"] for a in imgs if a["alt"] == f"overlay {ids[0]}"))
    assert overlay.shape[:2] == (IMAGE_SIZE[1], IMAGE_SIZE[0])
    side = _decode(next(a["src"] for a in imgs if a["alt"] == f"side view {ids[0]}"))
    assert side.std() > 10  # a body was drawn on the background
    # one strip column per frame and flag, and a plot point per frame
    assert text.count("<rect x=") >= 4 * n
    assert text.count("<circle") == n
    assert "Over time" not in text  # no tracks: not a video


def test_report_of_a_video_renders_overlays_and_thumbnails(video_fit, tmp_path, monkeypatch):
    out, obs_path = video_fit
    monkeypatch.chdir(tmp_path)  # image_paths are relative to the observation file, not the working folder
    summary = write_report(out, output=tmp_path / "r.html", max_frames=3)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert summary["video"] and summary["overlays"] == "rendered"
    assert summary["no_evidence"] == 1 and summary["shown_frames"] == ["a_0000", "a_0002", "b_0002"]
    page = _parse(tmp_path / "r.html")
    assert page.rows["tracks"] == "2" and page.rows["no evidence"] == "1 / 6"
    # the mean error skips the frame without evidence
    e = load_result(out / "result.npz")["err2d_px"].astype(np.float64)
    assert np.isnan(e[4]) and page.rows["2D error mean / median (px)"].startswith(f"{np.nanmean(e):.2f} /")
    # rendered overlays sit on the input images (their gradient), not on a grey canvas
    overlay = _decode(next(a["src"] for t, a in page.tags if t == "img" and a.get("alt") == "overlay a_0000"))
    assert overlay.shape[:2] == (IMAGE_SIZE[1], IMAGE_SIZE[0])
    blue = overlay[:, :, 0].astype(float)  # BGR: the picture's blue grows from 0 to 255 left to right
    assert np.median(blue[:, -12:]) - np.median(blue[:, :12]) > 150
    # a thumbnail strip per track, in time order, captioned with time and frame id
    assert "track a: 3 of 3 frames" in text and "track b: 3 of 3 frames" in text
    thumbs = [a["alt"] for t, a in page.tags if t == "img" and a.get("alt", "").startswith("thumbnail")]
    assert thumbs == [f"thumbnail {k}_{i:04d}" for k in "ab" for i in range(3)]
    assert "t=2<br>b_0002" in text
    thumb = _decode(next(a["src"] for t, a in page.tags if t == "img" and a.get("alt") == "thumbnail a_0001"))
    assert thumb.shape[:2] == (105, 140)  # 320 x 240 shrunk to 140 pixels wide
    # row 1's own picture, with a body drawn over a small part of it
    changed = (np.abs(thumb.astype(int) - _decode_png_texture(1)).sum(axis=2) > 60).mean()
    assert 0.01 < changed < 0.3


def test_spread_rows():
    assert spread_rows(4, 8) == [0, 1, 2, 3]
    assert spread_rows(100, 5) == [0, 25, 50, 74, 99]
    assert spread_rows(0, 5) == [] and spread_rows(3, 0) == []


@needs_chromium
def test_report_renders_in_chromium(images_fit, tmp_path):
    out, _ = images_fit
    write_report(out)
    url = (out / "report.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"]
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    import cv2

    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert img.std() > 20
    colours = np.unique(img.reshape(-1, 3) // 16, axis=0)  # 4-bit colour cells
    assert len(colours) > 50
    # the flags strip's green and red are on the page
    assert ((img[:, :, 1] > 140) & (img[:, :, 2] < 100) & (img[:, :, 0] < 100)).sum() > 500
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    for fid in load_result(out / "result.npz")["frame_ids"]:
        assert f"data-frame=\"{fid}\"" in dom


def test_report_command_and_bad_folders(images_fit, tmp_path, capsys):
    out, obs_path = images_fit
    target = tmp_path / "page.html"
    assert main(["report", str(out), "-o", str(target), "--frames", "2", "--input", str(obs_path)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {target}" in printed and "frames shown: synthetic_000000, synthetic_000003" in printed
    assert target.is_file()

    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'result.npz'} not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere not found" in capsys.readouterr().err
    # observations of other frames than the result's
    from fitkit.commands import report

    other = tmp_path / "other.npz"
    shutil.copy(obs_path, other)
    with np.load(other) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["frame_ids"] = np.array([f"x{i}" for i in range(len(arrays["frame_ids"]))])
    np.savez(other, **arrays)
    args = argparse.Namespace(folder=str(out), output=str(tmp_path / "p.html"), input=str(other), model_dir=None,
                              frames=1, thumbnails=1, quiet=True, verbose=0)
    with pytest.raises(ValueError, match="frame ids do not match"):
        report.run(args)
