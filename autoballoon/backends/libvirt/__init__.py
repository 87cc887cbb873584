"""The libvirt backend: the only package that imports libvirt.

- ``connection``: open, reconnect in the background, event callbacks, close (``Connection``).
- ``reader``: time-budgeted reads, the busy map, the per-instance cache of the live XML
  (``Reader``).
- ``errors``: libvirt's errors mapped once into ``autoballoon.hypervisor``'s taxonomy.
- ``facade``: ``LibvirtHypervisor``, the ``Hypervisor`` protocol over the two.

Units are converted here, once: libvirt speaks KiB, QEMU bytes; everything leaving this package
uses QEMU's names and bytes for statistics and KiB for sizes. The QMP and domain-XML text (what
is sent, how the balloon and metadata are parsed) is ``autoballoon.qmp``'s.
"""

from autoballoon.backends.libvirt.errors import map_error
from autoballoon.backends.libvirt.facade import LibvirtHypervisor

__all__ = ["LibvirtHypervisor", "map_error"]
