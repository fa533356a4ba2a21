"""Image rendering kernels: CUDA (CuPy) and an exact CPU twin sharing render_common.h.

`presets` holds the image recipes; `cpu` the compiled CPU twin; `gpu` the CUDA launchers (it
imports CuPy only when used). This package knows nothing of files, training or models.
"""
from kernels.presets import PRESETS, ObjectStyle, RenderConfig, preset

__all__ = ["PRESETS", "ObjectStyle", "RenderConfig", "preset"]
