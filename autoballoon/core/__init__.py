"""The pure core: samples, rates, classification, policies and decisions.

Nothing in this package may import libvirt, the scheduler, retry helpers or metrics, read the
clock, or touch files (an import-linter contract in pyproject.toml enforces the imports).
Time always comes in as a parameter named ``now`` or ``t`` (unix seconds, float).
"""
