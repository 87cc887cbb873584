"""autoballoon: a pressure-aware virtio-balloon controller for libvirt/KVM hosts.

The pipeline, one tick at a time:

    observe  (autoballoon.observe, autoballoon.backends.libvirt: host + guest samples)
      -> classify  (autoballoon.core.classify: pure, the seed's pressure matrix)
      -> decide    (autoballoon.core.decide: pure, hysteresis and safety rules)
      -> act       (autoballoon.act: live setter, or dry-run that only reports)

Everything under ``autoballoon.core`` is pure: no libvirt, no clock, no scheduler, no I/O.
That is what lets ``--dry-run`` and ``replay`` run exactly the production logic.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autoballoon")
    """The installed distribution's version, derived from git tags at build time (pyproject)."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
