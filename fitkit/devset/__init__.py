"""Development data sets built from public recordings (build-time code; fitkit never downloads at run time).

:mod:`fitkit.devset.pose2sim_demo`: pose2sim's ``Demo_MultiPerson`` (4 calibrated
views, two participants): per-view MediaPipe detections of every person and a
robust multi-view triangulated reference (``docs/devset.md``).
"""
