"""numpy, polars and pyarrow for upsert/base.py, imported on first use.

ApiIngest imports upsert/base.py while definitions load (for DestinationConfig), and these three cost about
0.3 s of CPU in every process that loads definitions (run workers, sensors, UI reloads), upsert or not.
"""

import importlib
from typing import Any


class LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


np = LazyModule("numpy")
pl = LazyModule("polars")
pa = LazyModule("pyarrow")
pc = LazyModule("pyarrow.compute")
