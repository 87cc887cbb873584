"""The backends: each one implements ``autoballoon.hypervisor.Hypervisor`` for one way of
reaching the guests' balloons. ``libvirt`` (the package ``autoballoon.backends.libvirt``) is the
only one today, and the only code that imports libvirt. ``commands/wiring.py`` picks the backend;
the loop, the sinks, replay, trace and report import none (pyproject.toml's contracts).
"""
