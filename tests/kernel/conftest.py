"""tests/kernel/guest runs only inside the qemu guest (XFRM_VM_GUEST=1), started
by test_kernel_vm.py; on the host pytest must not collect it."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from .hostns import ip

collect_ignore = [] if os.environ.get("XFRM_VM_GUEST") == "1" else ["guest"]


@pytest.fixture
def netns():
    """A throw-away network namespace of this kernel, removed even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace: run pytest as root")
    if shutil.which("ip") is None:
        pytest.skip("ip missing: apt-get install iproute2")
    name = f"ipsc-host-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name, check=False)
