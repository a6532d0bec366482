"""Fixtures for the guest: one namespace pair and one KernelDatapath per side
for the whole run (under emulation every setup costs), cleaned after each test."""

from __future__ import annotations

import os

import pytest

from engine.datapath.kernel import KernelDatapath

from .lab import Lab, create_lab, destroy_lab, sh

if os.environ.get("XFRM_VM_GUEST") != "1":  # pragma: no cover - collect_ignore keeps the host away
    pytest.skip("runs only inside the qemu guest: tests/kernel/test_kernel_vm.py starts it", allow_module_level=True)


@pytest.fixture(scope="session")
def lab():
    created = None
    try:
        created = create_lab(str(os.getpid()))
        yield created
    finally:
        if created is not None:
            destroy_lab(created)
        else:
            destroy_lab(Lab(f"ipsc-l-{os.getpid()}", f"ipsc-r-{os.getpid()}"))


@pytest.fixture(scope="session")
def datapaths(lab):
    left = KernelDatapath(netns=lab.left)
    try:
        right = KernelDatapath(netns=lab.right)
    except BaseException:
        left.close(flush=False)
        raise
    yield left, right
    left.close()
    right.close()


@pytest.fixture
def dp(lab, datapaths):
    """(left, right) datapaths; afterwards ours and anything the test added are gone."""
    left, right = datapaths
    for d in (left, right):
        d.read_events(0)  # drop events of earlier tests
    yield left, right
    for d, ns in ((left, lab.left), (right, lab.right)):
        d.flush_ours()
        sh("ip", "-n", ns, "xfrm", "state", "flush")
        sh("ip", "-n", ns, "xfrm", "policy", "flush")
