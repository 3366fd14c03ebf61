import numba
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def ieee_overflow_is_expected_without_jit():
    """Let pure-Python kernel runs overflow quietly, as compiled code does.

    The kernel lets an escaped orbit run on to inf or NaN inside a block (see
    fraktal.render.kernel). With ``NUMBA_DISABLE_JIT=1`` those are NumPy
    scalar operations, which warn, and warnings are errors in this suite.
    """
    if not numba.config.DISABLE_JIT:
        yield
        return
    with np.errstate(over="ignore", invalid="ignore"):
        yield
