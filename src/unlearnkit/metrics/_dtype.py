"""Upcasting of metric inputs: models run in float16 / bfloat16 hand metrics low-precision tensors, which NumPy cannot
hold (``np.asarray(bf16_tensor)`` raises ``TypeError: Got unsupported ScalarType BFloat16``). Every metric reads its
float inputs through :func:`to_numpy64` / :func:`to_tensor64`, so it computes in float64 (log-space quantities
stay in log space) whatever dtype and device the model produced, and checks of probability rows use a tolerance
of the input's own precision (:func:`input_eps`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _is_tensor_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and any(isinstance(t, torch.Tensor) for t in x)


def to_numpy64(x: Any) -> np.ndarray:
    """``x`` as a float64 NumPy array: a torch tensor of any dtype (float16, bfloat16, float32, integers) on any
    device is detached, moved to the CPU and upcast; a list/tuple of tensors or numbers is converted element-wise;
    anything else goes through ``np.asarray(x, dtype=float64)`` (which raises for non-numeric input)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if _is_tensor_seq(x):
        return np.asarray([to_numpy64(t) for t in x], dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def to_tensor64(x: Any) -> torch.Tensor:
    """``x`` as a float64 CPU torch tensor (same inputs as :func:`to_numpy64`; gradients are not kept)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.from_numpy(to_numpy64(x))


def input_eps(x: Any) -> float:
    """Machine epsilon of ``x``'s floating dtype (float16 9.8e-4, bfloat16 7.8e-3, float32 1.2e-7, float64 2.2e-16);
    float64's for integer and non-array inputs. For tolerances of checks on values that were rounded to that dtype
    before they reached the metric (e.g. probability rows summing to 1)."""
    if isinstance(x, torch.Tensor):
        return float(torch.finfo(x.dtype).eps) if x.dtype.is_floating_point else float(np.finfo(np.float64).eps)
    if _is_tensor_seq(x):
        return max(input_eps(t) for t in x)
    dt = getattr(x, "dtype", None)
    if dt is not None and np.issubdtype(dt, np.floating):
        return float(np.finfo(dt).eps)
    return float(np.finfo(np.float64).eps)
