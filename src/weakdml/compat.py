"""Make torchvision importable on a CPU-only torch build.

torchvision wheels built against CUDA register fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` at
import time; when their compiled extension does not load (CPU-only torch), those operators were never declared and the
import fails with "operator torchvision::nms does not exist". Declaring the two schemas, then importing again, lets
the pure-Python parts (transforms.v2, models, datasets) work; the C++ ops themselves stay unavailable. Nothing is
changed where torchvision imports normally (any machine whose torchvision matches its torch).
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None  # kept alive: dropping it would undeclare the ops


def import_torchvision() -> ModuleType:
    """Import and return torchvision, declaring its missing operator schemas only when the import needs them."""
    global _library
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _library.define(schema)
        import torchvision
    return torchvision
