"""Multi-view geometry: triangulation of keypoints seen by calibrated cameras (:mod:`fitkit.geometry.triangulate`)."""
