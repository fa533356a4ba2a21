"""Install the collider event-image engine: `pip install -e ".[dev]"`."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "numpy>=1.26",
    "pyarrow>=15",
    "awkward>=2.6",
    "uproot>=5.7",  # RNTuple (format 1.0) reading and writing as used by the converter and its tests
    "xxhash>=3.0",  # RNTuple page checksums (uproot needs it too)
    "webdataset>=0.2.90",
    "torch>=2.3",
    "accelerate>=1.0",
    "nvidia-dali-cuda130>=1.50",
    "cupy-cuda13x>=13.0",
    # 8.318.0 ships no binary wheel (it compiles for 15+ minutes): stay on 8.317.x.
    "pythia8mc>=8.317,<8.318",
    "fastjet>=3.4.3",
    "isal>=1.6",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "pillow>=10",
    "timm>=1.0",
    "scikit-learn>=1.4",
    "tensorboard>=2.15",
    # Scale-out: the executors of engine.data.tasks (a Dask cluster; HTCondor/Slurm via jobqueue).
    "distributed>=2024.8",
    "dask-jobqueue>=0.9",
    # Shards behind a URL (engine.data.remote): S3, XRootD (root://), HTTP(S) through fsspec.
    "fsspec>=2024.6",
    "s3fs>=2024.6",
    "fsspec-xrootd>=0.5",
    "aiohttp>=3.9",
]

setup(
    name="collider-engine",
    version="0.1.0",
    description="Deep learning on particle-collider events: Parquet, WebDataset shards, GPU-rendered event images.",
    packages=find_packages(include=["engine", "engine.*", "kernels", "kernels.*"]),
    package_data={"kernels": ["*.cu", "*.cuh", "*.h", "*.cpp"], "engine": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6",
                            # an S3 server for the tests (tests/servers.py)
                            "moto[server]>=5.0"]},
)
