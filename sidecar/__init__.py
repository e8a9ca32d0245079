"""The MediaMTX access sidecar: directory groups decide who sees which MediaMTX stream."""

__version__ = "0.1.0"
