"""Lab benchmarks on real guests: reclaimed memory versus harm (``python -m benchmarks.lab``)
and the on-demand mode against a host shortfall (``python -m benchmarks.lab.ondemand``)."""
