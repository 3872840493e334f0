"""Body models: the embedded open body and licensed SMPL-family files.

``load_body_model`` returns a :class:`~fitkit.body.model.BodyModel` (SMPL's
24-joint format, sparse evaluation) for the open body or for official SMPL
files. SMPL-H and SMPL-X run through smplx itself: see
:func:`fitkit.body.model_files.create_smplx_module`.
"""
from __future__ import annotations

import torch

from fitkit.body.model import BodyModel, BodyOutput, EvalPlan

MODEL_TYPES = ("open", "open_real", "smpl")
GENDERS = ("neutral", "male", "female")


def load_body_model(model_type: str = "open", gender: str = "neutral", *, model_dir=None,
                    num_betas: int = 10, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> BodyModel:
    """Load a SMPL-format body model.

    Args:
        model_type: ``"open"`` (embedded, no licence needed), ``"open_real"`` (the open
            body whose ``blazepose33`` points are the ones calibrated on real MediaPipe
            detections, docs/open_body.md; the model is still named ``"open"``) or ``"smpl"`` (official
            files from ``model_dir`` or the ``FITKIT_MODELS`` environment variable, in
            smplx's folder layout; see docs/model_files.md).
        gender: ``"neutral"``, ``"male"`` or ``"female"``. The open body is one
            gender-neutral model; its gender is a direction in shape space
            (``open_body_arrays()["gender_direction"]``), so only ``"neutral"`` is accepted.
        num_betas: shape coefficients used (open body: up to 24; SMPL: 10 or 300).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}"
                         " (SMPL-H/SMPL-X: fitkit.body.model_files.create_smplx_module)")
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if model_type in ("open", "open_real"):
        from fitkit.body.open_body import open_body_arrays, open_body_keypoint_sets

        if gender != "neutral":
            raise ValueError(
                f"gender={gender!r}: the open body is gender-neutral; move betas along "
                "open_body_arrays()['gender_direction'] for a male (-) or female (+) body"
            )
        blazepose = "blazepose33_real" if model_type == "open_real" else "blazepose33"
        model = BodyModel(open_body_arrays(), num_betas=num_betas,
                          keypoint_sets=open_body_keypoint_sets(blazepose=blazepose),
                          name="open", gender=gender, dtype=dtype)
        model.blazepose_definition = blazepose
    else:
        from fitkit.body.model_files import find_model_file, load_model_arrays
        from fitkit.body.smpl_keypoints import SMPL_NUM_VERTICES, smpl_keypoint_sets

        arrays = load_model_arrays(find_model_file("smpl", gender, model_dir))
        # Keypoint sets are defined on SMPL's own mesh; a re-meshed SMPL-format file gets none.
        n_verts = arrays["v_template"].shape[0]
        keypoint_sets = smpl_keypoint_sets() if n_verts == SMPL_NUM_VERTICES else None
        model = BodyModel(arrays, num_betas=num_betas, keypoint_sets=keypoint_sets, name="smpl",
                          gender=gender, dtype=dtype)
        if keypoint_sets is None:
            model.keypoints_note = (f"{arrays.path}: the mesh has {n_verts} vertices, not SMPL's "
                                    f"{SMPL_NUM_VERTICES}, so SMPL's keypoint sets do not apply")
    model.model_type = model_type  # what load_body_model was asked for: results record it to reload the same
    return model.to(device)


__all__ = ["BodyModel", "BodyOutput", "EvalPlan", "load_body_model", "MODEL_TYPES", "GENDERS"]
