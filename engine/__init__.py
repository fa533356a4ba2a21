"""Deep learning on particle-collider events.

Events (Pythia 8, NanoAOD, Delphes, JSON) -> canonical Parquet -> WebDataset shards ->
streaming loader -> images rendered on the fly (CUDA kernels, or their CPU twin) -> models.
"""
__version__ = "0.1.0"
