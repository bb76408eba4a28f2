"""Apache Airflow provider for the NextLeg v2 API (Midjourney image jobs).

Kept free of heavy imports on purpose: the emulator and the pytest plugin import this package, and
must start without loading Airflow.
"""

from __future__ import annotations

__version__ = "0.1.0"
