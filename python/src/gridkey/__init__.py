"""GridKey: contributory ECC group keys for smart-metering networks."""

__version__ = "0.1.0"
