"""Cost models: time and energy of one kernel on one device, registered by device kind.

Importing this package registers every built-in cost model in ``COST_MODELS``.
"""

from pimserve.hardware import gpu, link, pim, ssd  # noqa: F401  (registration side effects)
from pimserve.hardware.cost import COST_MODELS, ZERO, Cost, CostModel, cost_model_for
from pimserve.hardware.link import LinkModel

__all__ = ["COST_MODELS", "ZERO", "Cost", "CostModel", "LinkModel", "cost_model_for"]
