"""port-tracker: GPS tracking of trucks and containers in seaports with security alerts."""

__version__ = "0.1.0"
