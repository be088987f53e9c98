"""dnasweep: sweeps and NAS for Distributed Neural Architectures (arXiv 2506.22389)."""

__version__ = "0.1.0"
