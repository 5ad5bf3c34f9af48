"""FC placement: which device group runs each FC kernel group in an iteration.

Registered in ``FC_PLACEMENT``:

- ``static-gpu``: every FC kernel on the GPUs (A100+AttAcc, A100+HBM-PIM, GPU-only).
- ``static-pim``: every FC kernel on FC-PIM (AttAcc-only, PIM-only PAPI).
- ``papi``: PAPI's online kernel characterisation (PAPI section 5.2): the estimated arithmetic
  intensity RLP x TLP of the kernel group is compared with the threshold ``alpha`` after every
  iteration; above alpha the group is compute-bound and goes to the GPU, otherwise to FC-PIM.
  For MoE, each expert is a group of its own whose estimate is (tokens routed to it) x TLP.
- ``oracle``: the faster device for each FC kernel group per iteration, priced by the cost
  models: the upper bound that shows how much a single threshold loses.

A policy sees only what a runtime scheduler could see: the kernel group's parallelism estimate
(``reuse``: tokens sharing each weight read) and, for the oracle, the priced costs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from pimserve.errors import ConfigurationError
from pimserve.registry import Registry

GPU, PIM = "gpu", "fc_pim"


class FCPlacement(ABC):
    """Decides GPU or FC-PIM for one FC kernel group."""

    name: str = ""

    def __init__(self, has_gpu: bool, has_fc_pim: bool, alpha: float | None = None):
        self.has_gpu, self.has_fc_pim, self.alpha = has_gpu, has_fc_pim, alpha

    @abstractmethod
    def place(self, reuse: int, prefill: bool, price: Callable[[str], float]) -> str:
        """Return ``"gpu"`` or ``"fc_pim"``.

        ``reuse`` is the group's RLP x TLP estimate (tokens per weight read), ``prefill`` says
        prompt tokens are in the kernel, ``price(target)`` gives the kernel group's time there.
        """

    def _only(self) -> str | None:
        if not self.has_gpu:
            return PIM
        if not self.has_fc_pim:
            return GPU
        return None


FC_PLACEMENT: Registry[type[FCPlacement]] = Registry("FC placement policy")


@FC_PLACEMENT.register("static-gpu")
class StaticGPU(FCPlacement):
    """Every FC kernel on the GPUs."""

    def __init__(self, has_gpu: bool, has_fc_pim: bool, alpha: float | None = None):
        if not has_gpu:
            raise ConfigurationError("fc_placement 'static-gpu' needs a system with a gpu group")
        super().__init__(has_gpu, has_fc_pim, alpha)

    def place(self, reuse: int, prefill: bool, price: Callable[[str], float]) -> str:
        return GPU


@FC_PLACEMENT.register("static-pim")
class StaticPIM(FCPlacement):
    """Every FC kernel on FC-PIM (prefill too when there is no GPU)."""

    def __init__(self, has_gpu: bool, has_fc_pim: bool, alpha: float | None = None):
        if not has_fc_pim:
            raise ConfigurationError("fc_placement 'static-pim' needs an fc_pim group")
        super().__init__(has_gpu, has_fc_pim, alpha)

    def place(self, reuse: int, prefill: bool, price: Callable[[str], float]) -> str:
        return PIM


@FC_PLACEMENT.register("papi")
class PAPI(FCPlacement):
    """PAPI: RLP x TLP > alpha -> GPU, else FC-PIM; re-decided every iteration."""

    def __init__(self, has_gpu: bool, has_fc_pim: bool, alpha: float | None = None):
        if alpha is None or alpha <= 0:
            raise ConfigurationError(
                f"fc_placement 'papi' needs a positive alpha (got {alpha}); "
                "run `pimserve calibrate` or set policies.alpha"
            )
        super().__init__(has_gpu, has_fc_pim, alpha)

    def place(self, reuse: int, prefill: bool, price: Callable[[str], float]) -> str:
        only = self._only()
        if only:
            return only
        assert self.alpha is not None
        return GPU if reuse > self.alpha else PIM


@FC_PLACEMENT.register("oracle")
class Oracle(FCPlacement):
    """The faster device for each FC kernel group, per iteration (upper bound)."""

    def place(self, reuse: int, prefill: bool, price: Callable[[str], float]) -> str:
        only = self._only()
        if only:
            return only
        return GPU if price(GPU) <= price(PIM) else PIM
