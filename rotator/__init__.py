"""rotator: zero-downtime rotation of SaaS service-account API keys into Vault."""

__all__ = ["__version__"]

__version__ = "0.1.0"
