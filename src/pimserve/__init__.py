"""pimserve: simulate LLM serving on heterogeneous GPU + processing-in-memory systems.

Python API: :func:`simulate`, :func:`load_system`, :func:`load_model` (imported lazily so that
``import pimserve.specs`` stays light).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "RunResult", "load_model", "load_system", "load_workload", "simulate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pimserve import api

        return getattr(api, name)
    raise AttributeError(f"module 'pimserve' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (loaded lazily by :func:`__getattr__`) next to the module's own names."""
    return sorted({*globals(), *__all__})
