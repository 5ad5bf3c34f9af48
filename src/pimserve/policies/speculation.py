"""Speculative decoding: how many tokens each request verifies per step (TLP).

TLP is the number of tokens a request processes per decode step: ``TLP - 1`` draft tokens plus
the one the target model always produces. With per-token acceptance probability ``p`` the
tokens produced per step are the leading accepted drafts plus one, expected
``(1 - p**TLP) / (1 - p)`` (Leviathan et al. 2023).

Registered in ``SPECULATION``:

- ``fixed``: TLP stays as configured (PAPI's system-defined speculation length).
- ``dynamic``: adapts TLP to the acceptance observed so far, as dynamic speculation-length
  methods do (Mamou et al. 2024, which PAPI cites as a source of changing TLP): the TLP that
  maximises expected tokens per verified token-cost, ``argmax_t E[tokens](p_hat, t) / (1 + c t)``
  over 1..tlp_max, with ``c`` the relative cost of one more verified token (default 0.1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.registry import Registry
from pimserve.workload.speculative import expected_accepted, sample_accepted


def expected_tokens(p: float, tlp: int) -> float:
    """Expected tokens produced per step with ``tlp`` verified tokens and acceptance ``p``."""
    return 1.0 if tlp <= 1 else expected_accepted(p, tlp - 1)


def sample_tokens(rng: np.random.Generator, p: float, tlp: int, n: int) -> np.ndarray:
    """Tokens produced per request for ``n`` requests: leading accepted drafts + 1 (int64)."""
    if tlp <= 1 or n == 0:
        return np.ones(n, dtype=np.int64)
    return sample_accepted(rng, p, tlp - 1, n)


class Speculation(ABC):
    """Chooses TLP for the next step and observes what was accepted."""

    def __init__(self, tlp: int, acceptance: float, tlp_max: int | None = None):
        if tlp < 1:
            raise ConfigurationError(f"tlp must be at least 1 (got {tlp})")
        if not 0.0 <= acceptance <= 1.0:
            raise ConfigurationError(f"acceptance must be in [0, 1] (got {acceptance})")
        self.tlp0, self.p = tlp, acceptance
        self.tlp_max = tlp_max or max(tlp, 8)

    @abstractmethod
    def tlp(self) -> int:
        """TLP for the next decode step."""

    def observe(self, verified: int, produced: int, steps: int) -> None:  # noqa: B027
        """Record ``produced`` tokens out of ``verified`` over ``steps`` request-steps."""


SPECULATION: Registry[type[Speculation]] = Registry("speculation policy")


@SPECULATION.register("fixed")
class Fixed(Speculation):
    """TLP stays at the configured speculation length."""

    def tlp(self) -> int:
        return self.tlp0


@SPECULATION.register("dynamic")
class Dynamic(Speculation):
    """TLP adapted to the observed acceptance (estimated from produced vs verified tokens)."""

    cost_per_token = 0.1

    def __init__(self, tlp: int, acceptance: float, tlp_max: int | None = None):
        super().__init__(tlp, acceptance, tlp_max)
        self._accepted = 1.0  # Beta(1, 1) prior on the acceptance probability
        self._trials = 2.0
        self._tlp = tlp

    def tlp(self) -> int:
        return self._tlp

    def observe(self, verified: int, produced: int, steps: int) -> None:
        # each request-step: (produced - 1) accepted drafts; one rejection unless all accepted
        accepted = produced - steps
        drafts_seen = min(verified - steps, accepted + steps)
        self._accepted += accepted
        self._trials += max(drafts_seen, accepted)
        p_hat = min(self._accepted / self._trials, 0.999)
        ts = np.arange(1, self.tlp_max + 1)
        gain = (1.0 - p_hat**ts) / (1.0 - p_hat) / (1.0 + self.cost_per_token * ts)
        self._tlp = int(ts[np.argmax(gain)])
