"""fabns: Fabric connections that run inside Linux namespaces and containers."""

__version__ = "0.1.0"
