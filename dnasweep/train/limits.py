"""Per-trial host memory limit and out-of-memory recognition.

A trial that allocates beyond `resources.memory_gb` must fail alone, with the reason, instead of
taking the node (and every other trial on it) down. The limit is RLIMIT_DATA over what the worker
process already holds, so a too-large allocation raises in the trial (MemoryError or torch's
"can't allocate memory") rather than waking the kernel's OOM killer. Linux only; elsewhere no-op.
"""

from __future__ import annotations

import contextlib
import re

import torch

_OOM_TEXT = ("can't allocate memory", "out of memory", "cannot allocate memory")


def is_oom(e: BaseException) -> bool:
    """True for CUDA and host out-of-memory errors, as torch and Python raise them."""
    if isinstance(e, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(t in str(e).lower() for t in _OOM_TEXT)


def _vm_data() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmData:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


@contextlib.contextmanager
def memory_limit(gb: float | None):
    """Inside the block the process may allocate about `gb` GiB more than it holds on entry."""
    import resource

    now = _vm_data() if gb else None
    if now is None:
        yield
        return
    old = resource.getrlimit(resource.RLIMIT_DATA)
    soft = now + int(gb * 2**30)
    if old[1] != resource.RLIM_INFINITY:
        soft = min(soft, old[1])
    resource.setrlimit(resource.RLIMIT_DATA, (soft, old[1]))
    try:
        yield
    finally:  # the worker process is reused for the next trial: give its limit back
        resource.setrlimit(resource.RLIMIT_DATA, old)
