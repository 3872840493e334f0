"""Package layout; the metadata is in pyproject.toml.

The shipped data keeps living in the top-level folders ``fitting_configs/``,
``priors/`` and ``initializers/`` (their only copy). ``package_dir`` maps each
of them to a package under ``fitkit._shipped``, so a wheel carries them inside
``fitkit/_shipped/`` and an editable install sees the checkout's folders under
the same names; :mod:`fitkit.shipped` finds them with ``importlib.resources``.
The folders hold an ``__init__.py`` because the editable install maps only
regular packages to folders outside ``fitkit/``.
"""
from setuptools import find_namespace_packages, setup

#: package name -> top-level folder it is built from
SHIPPED = {
    "fitkit._shipped.fitting_configs": "fitting_configs",
    "fitkit._shipped.priors": "priors",
    "fitkit._shipped.initializers": "initializers",
}

setup(
    packages=[*find_namespace_packages(include=["fitkit", "fitkit.*"]), *SHIPPED,
              "fitkit._shipped.fitting_configs.grids"],
    package_dir=SHIPPED,
    package_data={
        "fitkit.assets.open_body": ["*.npz", "NOTICE"],
        "fitkit.assets.pose_data": ["*.npz", "NOTICE"],
        "fitkit._shipped.fitting_configs": ["*.yaml", "*.md"],
        "fitkit._shipped.fitting_configs.grids": ["*.yaml"],
        "fitkit._shipped.priors": ["*.pkl", "*.pt", "*.md"],
        "fitkit._shipped.initializers": ["*.pt", "*.md", "*.json"],
    },
)
