"""fitkit.body.model_files: layout resolution, validated loading, smplx modules.

The oracle for the modules is smplx itself, built from the same arrays (or, for
SMPL-X, reading a file we wrote) through its own loading path.
"""
import pickle

import numpy as np
import pytest
import smplx
import smplx.vertex_ids
import torch
from smplx.utils import Struct

from fitkit.body.model_files import (
    ENV_VAR,
    REQUIRED_KEYS,
    create_smplx_module,
    find_model_file,
    load_model_arrays,
    resolve_model_dir,
)
from fitkit.errors import ModelFileError
from tests.test_safe_pickle import (
    CallsOnLoad,
    dump_with_fake_chumpy,
    official_style,
    synthetic_smpl_arrays,
)

N_VERTS = 40


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


# ----------------------------------------------------------------------------
# resolve_model_dir / find_model_file


def test_model_dir_from_argument_then_env(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_model_dir() == tmp_path
    assert resolve_model_dir(other) == other


def test_no_model_dir_explains_both_options(no_env):
    with pytest.raises(ModelFileError) as err:
        resolve_model_dir()
    assert "model_dir=" in str(err.value) and ENV_VAR in str(err.value)


def test_model_dir_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ModelFileError, match=rf"nope \(from \${ENV_VAR}\) is not a folder"):
        resolve_model_dir()


def test_smplx_layout_found_through_env(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    smpl = touch(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl")
    smplx_female = touch(tmp_path / "smplx" / "SMPLX_FEMALE.npz")
    assert find_model_file("smpl") == smpl
    assert find_model_file("SMPLX", gender="Female") == smplx_female


@pytest.mark.parametrize("gender, name", [
    ("neutral", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"),
    ("male", "basicmodel_m_lbs_10_207_0_v1.0.0.pkl"),
    ("female", "basicModel_f_lbs_10_207_0_v1.0.0.pkl"),
    ("female", "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"),
])
def test_official_smpl_names(tmp_path, no_env, gender, name):
    path = touch(tmp_path / "smpl" / name)
    assert find_model_file("smpl", gender, tmp_path) == path


def test_model_dir_may_be_the_per_type_folder(tmp_path, no_env):
    path = touch(tmp_path / "smplh" / "SMPLH_MALE.pkl")
    assert find_model_file("smplh", "male", tmp_path / "smplh") == path


def test_names_match_case_insensitively(tmp_path, no_env):
    path = touch(tmp_path / "smpl" / "smpl_male.pkl")
    assert find_model_file("smpl", "male", tmp_path) == path


def test_extension_preference_follows_smplx(tmp_path, no_env):
    pkl = touch(tmp_path / "smplh" / "SMPLH_MALE.pkl")
    npz = touch(tmp_path / "smplh" / "SMPLH_MALE.npz")
    assert find_model_file("smplh", "male", tmp_path) == pkl
    assert find_model_file("smplh", "male", tmp_path, ext="npz") == npz
    x_pkl = touch(tmp_path / "smplx" / "SMPLX_MALE.pkl")
    x_npz = touch(tmp_path / "smplx" / "SMPLX_MALE.npz")
    assert find_model_file("smplx", "male", tmp_path) == x_npz
    assert find_model_file("smplx", "male", tmp_path, ext=".pkl") == x_pkl


def test_missing_file_names_tried_paths_and_existing_files(tmp_path, no_env):
    touch(tmp_path / "smplh" / "SMPLH_MALE.pkl")
    touch(tmp_path / "smplh" / "SMPLH_FEMALE.pkl")
    with pytest.raises(ModelFileError) as err:
        find_model_file("smplh", "neutral", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "smplh" / "SMPLH_NEUTRAL.pkl") in message
    assert str(tmp_path / "smplh" / "SMPLH_NEUTRAL.npz") in message
    assert "<model_dir>/smplh/SMPLH_NEUTRAL.pkl|npz" in message
    assert "SMPLH_FEMALE.pkl, SMPLH_MALE.pkl" in message


def test_missing_smpl_lists_official_names_too(tmp_path, no_env):
    (tmp_path / "smpl").mkdir()
    with pytest.raises(ModelFileError) as err:
        find_model_file("smpl", "male", tmp_path)
    assert "basicmodel_m_lbs_10_207_0_v1.0.0.pkl" in str(err.value)
    assert "no .pkl/.npz model files present" in str(err.value)


@pytest.mark.parametrize("kwargs, bad", [
    ({"model_type": "mano"}, "model_type='mano'"),
    ({"model_type": "smpl", "gender": "other"}, "gender='other'"),
    ({"model_type": "smpl", "ext": "json"}, "ext='json'"),
])
def test_unknown_arguments_name_allowed_values(tmp_path, kwargs, bad):
    with pytest.raises(ValueError) as err:
        find_model_file(model_dir=tmp_path, **kwargs)
    assert isinstance(err.value, ModelFileError)
    assert bad in str(err.value) and "allowed values" in str(err.value)


# ----------------------------------------------------------------------------
# load_model_arrays


def assert_arrays_equal(loaded, expected):
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert loaded["f"].dtype == np.int64 and loaded["kintree_table"].dtype == np.int64


def test_npz_round_trip_skips_object_arrays_without_unpickling(tmp_path):
    arrays = synthetic_smpl_arrays(N_VERTS)
    marker = tmp_path / "marker"
    evil = np.empty(1, dtype=object)
    evil[0] = CallsOnLoad(exec, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, joint2num=evil, extra=np.arange(4.0), **arrays)

    loaded = load_model_arrays(path)

    assert_arrays_equal(loaded, arrays)
    np.testing.assert_array_equal(loaded["extra"], np.arange(4.0))
    assert "joint2num" not in loaded and "pickle" in loaded.skipped["joint2num"]
    assert not marker.exists()


def test_required_object_array_is_refused(tmp_path):
    arrays = synthetic_smpl_arrays(N_VERTS)
    arrays["weights"] = np.array([arrays["weights"], None], dtype=object)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=r"required key 'weights'.*would need pickle"):
        load_model_arrays(path)


def test_official_style_pkl_gives_plain_arrays(tmp_path):
    arrays = synthetic_smpl_arrays(N_VERTS)
    path = tmp_path / "model.pkl"
    dump_with_fake_chumpy(official_style(arrays), path)
    loaded = load_model_arrays(path)
    assert_arrays_equal(loaded, arrays)
    assert all(type(value) is np.ndarray for value in loaded.values())
    assert set(loaded.skipped) == {"bs_style", "bs_type", "pose_training_info"}
    assert loaded.path == path


def _set(key, value):
    def mutate(arrays):
        arrays[key] = value(arrays) if callable(value) else value
    return mutate


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda a: a.pop("weights"), "weights", "missing"),
    (_set("v_template", lambda a: np.full((N_VERTS, 3), np.nan)), "v_template", "NaN"),
    (_set("shapedirs", lambda a: a["shapedirs"][:-1]), "shapedirs", "(V, 3, K) with V=40"),
    (_set("posedirs", lambda a: a["posedirs"][..., :-9]), "posedirs", "(40, 3, 207)"),
    (_set("J_regressor", lambda a: a["J_regressor"][:, :-1]), "J_regressor", "(24, 40)"),
    (_set("weights", lambda a: a["weights"][:, :-1]), "weights", "(40, 24)"),
    (_set("v_template", lambda a: a["v_template"][:, :2]), "v_template", "(V, 3)"),
    (_set("f", lambda a: a["f"].astype(np.float64)), "f", "integer"),
    (_set("f", lambda a: a["f"] + N_VERTS), "f", "indices into"),
    (_set("kintree_table", lambda a: a["kintree_table"][:, ::-1].copy()), "kintree_table",
     "parent index in"),
    (_set("v_template", lambda a: a["v_template"].astype(str)), "v_template", "non-numeric"),
])
def test_invalid_model_errors_name_file_and_key(tmp_path, mutate, key, expected):
    arrays = synthetic_smpl_arrays(N_VERTS)
    mutate(arrays)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError) as err:
        load_model_arrays(path)
    message = str(err.value)
    assert str(path) in message and f"'{key}'" in message and expected in message


def test_non_finite_extra_key_is_skipped_not_fatal(tmp_path):
    arrays = synthetic_smpl_arrays(N_VERTS)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, J=np.array([np.inf]), **arrays)
    loaded = load_model_arrays(path)
    assert "J" not in loaded and "infinite" in loaded.skipped["J"]


@pytest.mark.parametrize("name, content, expected", [
    ("model.json", b"{}", "unknown model file extension '.json'"),
    ("model.npz", b"not a zip at all", "not a readable .npz"),
    ("model.pkl", pickle.dumps([1, 2]), "expected a dict of arrays"),
])
def test_bad_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=expected) as err:
        load_model_arrays(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------
# create_smplx_module, against smplx's own loading


def small_vertex_ids(n_verts):
    """smplx's extra-keypoint vertex ids remapped into a small synthetic mesh."""
    return {name: i % n_verts for i, name in enumerate(smplx.vertex_ids.vertex_ids["smplh"])}


def random_tree(n_joints, rng):
    return [-1] + [int(rng.integers(0, joint)) for joint in range(1, n_joints)]


def hand_arrays(rng):
    return {
        "hands_componentsl": rng.normal(size=(45, 45)) * 0.1,
        "hands_componentsr": rng.normal(size=(45, 45)) * 0.1,
        "hands_meanl": rng.normal(size=45) * 0.1,
        "hands_meanr": rng.normal(size=45) * 0.1,
    }


def random_inputs(model, rng, batch=3):
    """Random parameters for every pose/shape input the module has."""
    inputs = {}
    for name, param in model.named_parameters():
        scale = 0.3 if name != "transl" else 1.0
        inputs[name] = torch.tensor(rng.normal(scale=scale, size=(batch, param.shape[1])),
                                    dtype=torch.float32)
    return inputs


def assert_same_output(model, oracle, rng):
    inputs = random_inputs(oracle, rng)
    assert set(inputs) == {name for name, _ in model.named_parameters()}
    with torch.no_grad():
        got, want = model(**inputs), oracle(**inputs)
    torch.testing.assert_close(got.vertices, want.vertices, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.joints, want.joints, rtol=0, atol=1e-6)
    assert torch.equal(model.faces_tensor, oracle.faces_tensor)


def test_smpl_module_matches_smplx_built_from_arrays(tmp_path, no_env):
    arrays = synthetic_smpl_arrays(N_VERTS)
    (tmp_path / "smpl").mkdir()
    official_file = tmp_path / "smpl" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    dump_with_fake_chumpy(official_style(arrays), official_file)
    ids = small_vertex_ids(N_VERTS)

    model = create_smplx_module("smpl", model_dir=tmp_path, vertex_ids=ids, batch_size=3)
    oracle = smplx.SMPL(model_path=str(tmp_path), data_struct=Struct(**arrays),
                        vertex_ids=ids, batch_size=3)

    assert type(model) is smplx.SMPL and model.gender == "neutral"
    assert_same_output(model, oracle, np.random.default_rng(1))


def test_smplh_module_matches_smplx_built_from_arrays(tmp_path, no_env):
    rng = np.random.default_rng(2)
    arrays = synthetic_smpl_arrays(N_VERTS, n_betas=16, parents=random_tree(52, rng))
    arrays.update(hand_arrays(rng))
    (tmp_path / "smplh").mkdir()
    np.savez(tmp_path / "smplh" / "SMPLH_FEMALE.npz", **arrays)
    ids = small_vertex_ids(N_VERTS)
    options = dict(vertex_ids=ids, num_betas=16, num_pca_comps=12, batch_size=3)

    model = create_smplx_module("smplh", "female", tmp_path, **options)
    oracle = smplx.SMPLH(model_path=str(tmp_path), data_struct=Struct(**arrays), **options)

    assert type(model) is smplx.SMPLH and model.gender == "female"
    assert_same_output(model, oracle, rng)


def test_smplx_module_matches_smplx_reading_its_own_file(tmp_path, no_env, monkeypatch):
    rng = np.random.default_rng(3)
    # smplx.SMPLX always uses its built-in SMPL-X vertex ids; fit them to the small mesh.
    monkeypatch.setitem(smplx.vertex_ids.vertex_ids, "smplx", small_vertex_ids(N_VERTS))
    arrays = synthetic_smpl_arrays(N_VERTS, n_betas=20, parents=random_tree(55, rng))
    arrays.update(hand_arrays(rng))
    arrays["lmk_faces_idx"] = rng.integers(0, len(arrays["f"]), size=51)
    arrays["lmk_bary_coords"] = rng.dirichlet(np.ones(3), size=51)
    (tmp_path / "smplx").mkdir()
    with open(tmp_path / "smplx" / "SMPLX_MALE.pkl", "wb") as file:
        pickle.dump(arrays, file, protocol=2)
    oracle_file = tmp_path / "oracle" / "SMPLX_MALE.npz"
    oracle_file.parent.mkdir()
    np.savez(oracle_file, **arrays)

    model = create_smplx_module("smplx", "male", tmp_path, ext="pkl", batch_size=3)
    oracle = smplx.SMPLX(model_path=str(oracle_file.parent), gender="male", batch_size=3)

    assert type(model) is smplx.SMPLX and model.gender == "male"
    assert_same_output(model, oracle, rng)


def test_smplh_without_hand_components_names_the_key(tmp_path, no_env):
    (tmp_path / "smplh").mkdir()
    np.savez(tmp_path / "smplh" / "SMPLH_MALE.npz", **synthetic_smpl_arrays(N_VERTS))
    with pytest.raises(ModelFileError, match=r"'hands_componentsl', needed for a SMPL-H"):
        create_smplx_module("smplh", "male", tmp_path)


def test_create_rejects_owned_arguments(tmp_path):
    with pytest.raises(TypeError, match="model_path"):
        create_smplx_module("smpl", model_dir=tmp_path, model_path="x")


def test_required_keys_are_smplx_names():
    assert set(REQUIRED_KEYS) == {"v_template", "shapedirs", "posedirs", "J_regressor",
                                  "weights", "kintree_table", "f"}
