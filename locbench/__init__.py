"""locbench: benchmark and run deep-learning pipelines for protein localization on HPA-style images."""

__version__ = "0.1.0"
