"""ssl_exporter: a Prometheus exporter for TLS certificates."""

__version__ = "0.1.0"
