__version__ = "0.1.0"

# Telemetry off before anything imports mlflow or whylogs (see nbs/00_core.ipynb).
from .core import disable_telemetry as _disable_telemetry
_disable_telemetry()
