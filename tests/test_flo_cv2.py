"""fitkit's .flo reader and writer against OpenCV's (cv2.readOpticalFlow / cv2.writeOpticalFlow) as the oracle.

fitkit keeps its own reader: OpenCV returns None without a reason for a missing,
corrupt or truncated file, and leaves Middlebury's "unknown" 1e10 values as numbers
(docs/conventions.md); the bytes and values agree.
"""
import numpy as np
import pytest

from fitkit.errors import ObservationError
from fitkit.io.flow_readers import read_flo, write_flo

cv2 = pytest.importorskip("cv2")


def random_field(h=37, w=53, seed=0):
    return np.random.default_rng(seed).normal(scale=20.0, size=(h, w, 2)).astype(np.float32)


def test_opencv_reads_what_fitkit_writes_and_back(tmp_path):
    field = random_field()
    write_flo(tmp_path / "a.flo", field)
    np.testing.assert_array_equal(cv2.readOpticalFlow(str(tmp_path / "a.flo")), field)
    assert cv2.writeOpticalFlow(str(tmp_path / "b.flo"), field)
    np.testing.assert_array_equal(read_flo(tmp_path / "b.flo"), field)
    assert (tmp_path / "a.flo").read_bytes() == (tmp_path / "b.flo").read_bytes()


def test_unknown_pixels_are_nan_where_opencv_gives_the_raw_value(tmp_path):
    field = random_field(seed=1)
    field[3, 4] = np.nan
    write_flo(tmp_path / "u.flo", field)
    theirs = cv2.readOpticalFlow(str(tmp_path / "u.flo"))
    assert np.all(theirs[3, 4] == np.float32(1e10))  # Middlebury's marker, left as a number
    ours = read_flo(tmp_path / "u.flo")
    assert np.isnan(ours[3, 4]).all()
    known = np.isfinite(field).all(-1)
    np.testing.assert_array_equal(ours[known], theirs[known])


def test_bad_files_get_a_reason_where_opencv_returns_none(tmp_path):
    field = random_field(4, 5)
    write_flo(tmp_path / "ok.flo", field)
    (tmp_path / "cut.flo").write_bytes((tmp_path / "ok.flo").read_bytes()[:-8])
    (tmp_path / "junk.flo").write_bytes(b"not a flow file at all")
    for name, message in (("cut.flo", "truncated"), ("junk.flo", "magic number"), ("missing.flo", "not found")):
        assert cv2.readOpticalFlow(str(tmp_path / name)) is None
        with pytest.raises(ObservationError, match=f"{name}.*{message}"):
            read_flo(tmp_path / name)
