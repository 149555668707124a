"""Forward interception: the copies of a network that path-based scores (PX, SynFlow) run.

- :mod:`.op_args`: torch operation arguments bound by name;
- :mod:`.interceptor`: the ``TorchFunctionMode`` that routes each operation, module tracking;
- :mod:`.record`: the real network's gates and max-pool choices;
- :mod:`.copies`: replayed gates with substituted weights (copy 1), the linearised copy 2;
- :mod:`.rescaled`: copy 1 in float32 with per-layer powers of two (deep networks).
"""

from .copies import PathActivationCopy, PathKernelCopy, WeightSubstitution
from .interceptor import Interceptor, UnsupportedLayerError, maxpool_geometry, weighted_modules
from .op_args import OpCall
from .record import BN_SOURCES, Gate, GateRecorder, Recording
from .rescaled import RangeError, RescaledPathActivationCopy, tensor_exponent, with_exponent

__all__ = [
    "BN_SOURCES", "Gate", "GateRecorder", "Interceptor", "OpCall", "PathActivationCopy",
    "PathKernelCopy", "RangeError", "Recording", "RescaledPathActivationCopy",
    "UnsupportedLayerError", "WeightSubstitution", "maxpool_geometry", "tensor_exponent",
    "weighted_modules", "with_exponent",
]
