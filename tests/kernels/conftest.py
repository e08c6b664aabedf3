"""Kernel tests: run the Triton kernels in the interpreter when there is no GPU.

TRITON_INTERPRET must be set before the @triton.jit decorators run, i.e. before
workbench.kernels.triton_attention is imported (workbench.kernels imports it lazily). If some other
test imported it earlier without the interpreter, it is reloaded here so its kernels are interpreted.
"""

import importlib
import os
import sys

import pytest
import torch
from optional_deps import missing

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    _mod = sys.modules.get("workbench.kernels.triton_attention")
    if _mod is not None and type(_mod._pass_a_kernel).__name__ != "InterpretedFunction":
        importlib.reload(_mod)


def _triton_usable() -> tuple[bool, str]:
    from workbench.kernels import triton_available

    if not triton_available():
        return False, "triton is not installed"
    if HAS_CUDA:
        return True, ""
    from workbench.kernels.triton_attention import is_interpreting

    if not is_interpreting():
        return False, "no CUDA and TRITON_INTERPRET is not enabled"
    return True, ""


@pytest.fixture(scope="session")
def device() -> str:
    """Where the Triton backend runs: CUDA when present, else CPU through the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(scope="session")
def triton_ok():
    ok, why = _triton_usable()
    if not ok:
        missing(why)
    return True
