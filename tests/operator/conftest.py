"""Leave libvirt's test driver as the other tests expect it.

Within one process, ``test:///default`` keeps its state while any connection lives (and the
adapter's event callbacks keep theirs alive), so a test that resizes or stops the "test" domain
would leak into later tests. Each test here puts it back: running, at 2 GiB.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from .helpers import URI

INITIAL_KIB = 2 * 1024 * 1024


def reset_test_domain() -> None:
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName("test")
        if not dom.isActive():
            dom.create()
        dom.setMemory(INITIAL_KIB)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def pristine_test_domain() -> Iterator[None]:
    reset_test_domain()
    yield
    reset_test_domain()
