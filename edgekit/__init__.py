"""edgekit: a Python SDK for edge Kubernetes fleets."""

__version__ = "0.1.0"
