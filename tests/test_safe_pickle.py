"""fitkit.body.safe_pickle: official-style SMPL pickles load without chumpy; nothing runs."""
import builtins
import contextlib
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from fitkit.body.safe_pickle import load_pickle
from fitkit.errors import ModelFileError

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18,
                19, 20, 21]


class FakeCh:
    """Pickles like chumpy.ch.Ch: its __dict__ less caches, the value under 'x'."""

    def __init__(self, x):
        self._dirty_vars = {"x"}
        self._itr = None
        self._make_dense = self._make_sparse = False
        self._depends_on_deps = {}
        self.x = x


class FakeSelect:
    """Pickles like chumpy.reordering.Select: no 'x', only an operand and indices."""

    def __init__(self, a, idxs):
        self.a = a
        self.idxs = idxs


FakeCh.__module__, FakeCh.__qualname__, FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"
FakeSelect.__module__, FakeSelect.__qualname__ = "chumpy.reordering", "Select"
FakeSelect.__name__ = "Select"


@contextlib.contextmanager
def fake_chumpy():
    """Make FakeCh/FakeSelect importable as chumpy classes, only while dumping."""
    ch = types.ModuleType("chumpy.ch")
    ch.Ch = FakeCh
    reordering = types.ModuleType("chumpy.reordering")
    reordering.Select = FakeSelect
    package = types.ModuleType("chumpy")
    package.ch, package.reordering = ch, reordering
    modules = {"chumpy": package, "chumpy.ch": ch, "chumpy.reordering": reordering}
    assert not set(modules) & set(sys.modules), "a real chumpy must not be loaded"
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            del sys.modules[name]


def dump_with_fake_chumpy(obj, path, protocol=2):
    with fake_chumpy():
        data = pickle.dumps(obj, protocol=protocol)
    path.write_bytes(data)
    return data


def synthetic_smpl_arrays(n_verts=40, n_betas=10, parents=SMPL_PARENTS, seed=0):
    """A small SMPL-format model (random values, SMPL-like dtypes and shapes)."""
    rng = np.random.default_rng(seed)
    n_joints = len(parents)
    regressor = np.zeros((n_joints, n_verts))
    for joint in range(n_joints):  # each joint: a convex combination of 3 vertices
        regressor[joint, rng.choice(n_verts, 3, replace=False)] = rng.dirichlet(np.ones(3))
    weights = rng.random((n_verts, n_joints)) ** 4
    weights /= weights.sum(axis=1, keepdims=True)
    # Official files store the root's missing parent as uint32(-1) in an int64 table.
    parent_row = np.array([p if p >= 0 else 2**32 - 1 for p in parents], dtype=np.int64)
    return {
        "v_template": rng.normal(scale=0.3, size=(n_verts, 3)),
        "shapedirs": rng.normal(scale=0.01, size=(n_verts, 3, n_betas)),
        "posedirs": rng.normal(scale=0.01, size=(n_verts, 3, 9 * (n_joints - 1))),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.stack([parent_row, np.arange(n_joints)]),
        "f": rng.integers(0, n_verts, size=(2 * n_verts, 3)).astype(np.uint32),
    }


def official_style(arrays):
    """The arrays as an official SMPL .pkl holds them: chumpy values, sparse regressor."""
    model = dict(arrays)
    model["v_template"] = FakeCh(arrays["v_template"])
    model["shapedirs"] = FakeCh(arrays["shapedirs"])
    model["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    model["J_regressor_prior"] = scipy.sparse.csr_matrix(arrays["J_regressor"])
    model["bs_style"], model["bs_type"] = "lbs", "lrotmin"
    model["pose_training_info"] = {"num_subjects": 42, "scale": np.float64(0.5),
                                   "ids": [np.int32(1), (2.0, "a")]}
    return model


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_official_style_pickle_loads_without_chumpy(tmp_path, protocol):
    arrays = synthetic_smpl_arrays()
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    dump_with_fake_chumpy(official_style(arrays), path, protocol=protocol)

    loaded = load_pickle(path)

    assert "chumpy" not in sys.modules
    for key, expected in arrays.items():
        assert type(loaded[key]) is np.ndarray, key
        assert loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)
    np.testing.assert_array_equal(loaded["J_regressor_prior"], arrays["J_regressor"])
    assert loaded["bs_style"] == "lbs"
    info = loaded["pose_training_info"]
    assert info["num_subjects"] == 42 and info["scale"] == 0.5
    assert info["ids"] == [1, (2.0, "a")]


def test_shared_and_cyclic_containers(tmp_path):
    shared = {"v": FakeCh(np.arange(3.0))}
    cyclic = [1]
    cyclic.append(cyclic)
    path = tmp_path / "shared.pkl"
    dump_with_fake_chumpy({"a": shared, "b": shared, "c": cyclic}, path)
    loaded = load_pickle(path)
    for key in ("a", "b"):
        np.testing.assert_array_equal(loaded[key]["v"], np.arange(3.0))
    assert loaded["c"][0] == 1 and loaded["c"][1] is not None


def test_sparse_matrix_state_is_read_without_scipy_classes(tmp_path):
    dense = np.array([[0.0, 2.0, 0.0], [1.5, 0.0, 0.0]])
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"csc": scipy.sparse.csc_matrix(dense),
                                   "csr": scipy.sparse.csr_matrix(dense),
                                   "empty": scipy.sparse.csc_matrix((2, 4))}, protocol=2))
    loaded = load_pickle(path)
    for key in ("csc", "csr"):
        assert type(loaded[key]) is np.ndarray
        np.testing.assert_array_equal(loaded[key], dense)
    np.testing.assert_array_equal(loaded["empty"], np.zeros((2, 4)))


def test_chumpy_object_without_value_is_refused_naming_key(tmp_path):
    path = tmp_path / "model.pkl"
    dump_with_fake_chumpy({"posedirs": FakeSelect(FakeCh(np.ones(3)), np.arange(2))}, path)
    with pytest.raises(ModelFileError, match=r"'posedirs'.*chumpy\.reordering\.Select") as err:
        load_pickle(path)
    assert str(path) in str(err.value)


class CallsOnLoad:
    """Unpickling this calls ``func(*args)``: what a malicious model file would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("make_payload, refused", [
    (lambda marker: CallsOnLoad(os.system, f"touch '{marker}'"), f"{os.system.__module__}.system"),
    (lambda marker: CallsOnLoad(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
     "builtins.eval"),
    (lambda marker: CallsOnLoad(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    (lambda marker: CallsOnLoad(builtins.getattr, os, "system"), "builtins.getattr"),
])
def test_code_in_a_model_file_is_refused_and_not_run(tmp_path, protocol, make_payload, refused):
    marker = tmp_path / "marker"
    model = synthetic_smpl_arrays()
    model["weights"] = make_payload(marker)  # after several good arrays
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    try:
        path.write_bytes(pickle.dumps(model, protocol=protocol))
    except TypeError:  # the module object in the getattr payload can't be pickled
        model["weights"] = CallsOnLoad(builtins.getattr, "os", "system")
        path.write_bytes(pickle.dumps(model, protocol=protocol))

    with pytest.raises(ModelFileError) as err:
        load_pickle(path)

    message = str(err.value)
    assert str(path) in message and f"'{refused}'" in message
    assert "only contain arrays" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("payload, refused", [
    # copyreg._reconstructor may only rebuild the stand-ins, not admitted real classes.
    (b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR.",
     "copyreg._reconstructor of numpy.ndarray"),
    (b"c_codecs\nencode\n(Vabc\nVrot13\ntR.", "_codecs.encode with encoding 'rot13'"),
    (b"cnumpy.core.multiarray\n_reconstruct\n(c__builtin__\nobject\n(I0\ntVb\ntR.",
     "numpy _reconstruct of"),
    (b"c__builtin__\nobject\n)R.", None),  # the admitted 'object' marker is not callable
    (b"cnumpy\nndarray\n((I1\ntVO\nI0\nVAAAAAAAA\ntR.", None),  # nor is 'ndarray'
    (b"c__builtin__\nbytes\n(I1000000000\ntR.", "builtins.bytes with arguments"),
])
def test_admitted_helpers_cannot_be_abused(tmp_path, payload, refused):
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(ModelFileError) as err:
        load_pickle(path)
    assert str(path) in str(err.value)
    if refused:
        assert refused in str(err.value)


@pytest.mark.parametrize("keep", [0, 0.1, 0.5, -1])
def test_truncated_or_empty_file_is_a_model_file_error(tmp_path, keep):
    data = pickle.dumps(synthetic_smpl_arrays(), protocol=2)
    path = tmp_path / "SMPL_MALE.pkl"
    path.write_bytes(data[:int(len(data) * keep)] if keep != -1 else data[:-1])
    with pytest.raises(ModelFileError, match="truncated or corrupt") as err:
        load_pickle(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "absent.pkl"
    with pytest.raises(ModelFileError, match="absent.pkl"):
        load_pickle(path)


def test_python2_numpy1_names_are_admitted(tmp_path):
    """A hand-written protocol-0 pickle using Python 2 / numpy 1 global names."""
    data = np.arange(3, dtype="<f8").tobytes().decode("latin1")
    text = ("(dp0\nVx\np1\ncnumpy.core.multiarray\n_reconstruct\np2\n(cnumpy\nndarray\np3\n"
            "(I0\ntp4\nS'b'\np5\ntp6\nRp7\n(I1\n(I3\ntp8\ncnumpy\ndtype\np9\n(S'f8'\np10\n"
            "I0\nI1\ntp11\nRp12\n(I3\nS'<'\np13\nNNNI-1\nI-1\nI0\ntp14\nbI00\n"
            f"S{data!r}\np15\ntp16\nbs.")
    path = tmp_path / "py2.pkl"
    path.write_bytes(text.encode("latin1"))
    np.testing.assert_array_equal(load_pickle(path)["x"], np.arange(3.0))
