"""tests/kernel/guest runs only inside the qemu guest (XFRM_VM_GUEST=1), started
by test_kernel_vm.py; on the host pytest must not collect it."""

import os

collect_ignore = [] if os.environ.get("XFRM_VM_GUEST") == "1" else ["guest"]
