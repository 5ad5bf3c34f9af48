"""The KV hierarchy: per-block state of every running request across tiers, and its pricing.

A system with ``kv_tier`` groups (PAM's HBM-PIM, DDR-PIM and SSD-PIM; or GPU memory, host DRAM
and SSD for offloading) keeps its KV cache in blocks of ``kv_block_tokens`` tokens
(PagedAttention). :class:`KVHierarchy` holds, for every running request, which tier and which
bank group (or SSD channel) each of its blocks is on, the block's importance (PAM's EMA) and its
latent salience (the locality model), as 2-D numpy arrays ``[request slot, block]``. Each decode
step it:

1. allocates blocks for the tokens the step adds (placement policy: the first tier, or the
   fastest tier with room) and maps each new block to a bank group (round-robin by block index,
   or PAM's greedy rule: the bank group with the fewest activations over the last
   ``mapping_window`` steps);
2. draws the step's per-block attention scores from the locality model
   (:class:`~pimserve.specs.kv.LocalitySpec`) and updates the importance EMA
   ``I = lambda S + (1 - lambda) I`` (PAM eq. 7). The EMA is Algorithm 2's input and
   Algorithm 2 only runs while the KV spans more than one tier, so it is kept only then: at
   the first such step after steps on one tier every block starts afresh (``I = S``, as a
   new block's first step). With ``lambda`` = 0.6 an EMA forgets 99% of its past within five
   steps, so this only differs from updating it on every step in the first few steps after a
   spill, and a one-tier step skips it;
3. selects the blocks the sparse attention reads: the top ``ceil(blocks / ratio)`` by score
   (Double Sparsity at compression ``ratio``), or all blocks when dense;
4. prices attention per tier (below) and the approximate-score pass of the sparse selection;
5. runs the placement policy's rebalancing (PAM's Algorithm 2,
   :func:`~pimserve.policies.kv_placement.algorithm2`) and prices the migrations.

Pricing one layer's decode attention
------------------------------------
Tier ``t`` computes local attention over the blocks it holds that the step reads
(``tokens_t[r] = read blocks x block_tokens``, capped by the request's context), with its cost
model (heads spread over ``ways`` devices, requests balanced over ``sets`` replica sets, as for
an ``attn`` group). Bank groups work in parallel and a device waits for its slowest one, so a
replica set's time is its requests' total time multiplied by the bank-group imbalance
``max load / mean load`` of the blocks it reads this step (this is what the mapping changes).
Tiers run in parallel and the layer waits for the slowest (PAM section 5):

- with PAMattention, each tier reduces its per-block partials on its reduction units and sends
  one partial ``(O, m, l)`` per request and head to HBM-PIM over its link, where the
  inter-device reduction runs on HBM-PIM's reduction units (a request read from ``t >= 2``
  tiers merges its ``t`` partials; one read from a single tier has its result already);
- without it (fixed FlashDecoding-style tiling), every read block's partial leaves its device
  and is merged on the GPU: ``blocks x heads x TLP x (head_dim + 2)`` values per tier over the
  tier's link, or, for a tier without one (HBM-PIM stacks that are the GPUs' own memory) and
  sparse reads, over the stacks' I/O (``io_bw_gbps`` each): the intra-device transfers PAM's
  distributed reduction removes (PAM 5.2). A dense read on such a tier (AttAcc, L-PIM) streams
  each request's KV as one matrix, and its reduction is the device model's own (partial sums,
  softmax). [INF] PAM gives no formula for its fixed-tiling baseline; this prices the data it
  must move with the devices' own I/O figures.

A tier with ``compute: false`` (offloading) computes nothing: its blocks are fetched over its
link to the first tier (the GPU) each step, and the GPU's attention waits for the fetch
(prefetching overlaps the two: ``max(fetch, compute)``, DeepSpeed-Inference style).

The summary model
-----------------
With ``kv_model: summary`` (the default) a request holds at most about
``kv_summary_columns`` columns: past that, its cold blocks merge into weighted columns (each
standing for several blocks of one tier; their bank groups kept as a per-request histogram,
and those of the merged blocks its steps read, a persistent subset, as a second one), and the
step runs :meth:`KVHierarchy._step_summary`, whose cost grows with the columns, not
the context. Until some request merges, the exact per-block code runs. docs/models.md ("The
summary KV model") says what is kept, what is sampled, and how far it is from the exact model.

New KV written to tiers other than the first moves over their links (prefill and decode).
Migrations go over the slower tier's link, through PAM's interface or through the CPU (PAM 6.2:
the interface is more than 20x faster; the CPU path is priced at 1/20 of the link bandwidth);
they run on the links while the iteration computes, so a step takes
``max(iteration, migration)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from pimserve.attention.pamattention import partial_elements
from pimserve.engine.config import RunConfig
from pimserve.engine.system import BuiltSystem
from pimserve.engine.tables import AttentionTables
from pimserve.errors import ConfigurationError
from pimserve.hardware.group import GroupModel
from pimserve.hardware.pim import PIMModel
from pimserve.hardware.ssd import SSDPIMModel
from pimserve.policies.kv_placement import (
    KV_PLACEMENT,
    KVPlacement,
    algorithm2,
    algorithm2_stage,
)
from pimserve.specs.kv import KVPolicySpec, LocalitySpec
from pimserve.specs.model import ModelSpec

CPU_MIGRATION_SLOWDOWN = 20.0
"""PAM 6.2: the re-layout interface cuts inter-device transfer latency by more than 20x."""

MAX_SWAP_FRACTION = 0.02
"""At most this fraction of resident blocks (and at least 64) swapped per Algorithm-2 stage per
step; PAM reports ~0.7% of KV tokens adjusted per step, so this bound rarely binds."""

DS_CHANNEL_RATIO = 8.0
"""Double Sparsity's label cache keeps 1/8 of the channels (16 of 128) for approximate scores
(arXiv 2408.07092, its default channel sparsity); the selection pass reads them for every
resident token."""

_TINY32 = np.nextafter(np.float32(0), np.float32(1))
"""Smallest positive float32: normalising a row of zero scores divides by it (0 / tiny = 0)."""

_COLD_MARGIN = 0.8
"""On one tier, the summary model leaves a redrawn block in its merged column when its new
salience is below this fraction of its request's last selection threshold (it stays
unread)."""

RUN_CELLS = 1 << 20
"""At most about this many ``[step, request, block]`` cells in one run of KV steps
(:meth:`KVHierarchy.decode_run`): a longer run is priced in several calls, with the same
results."""

_TAKEN = np.iinfo(np.int64).max
"""Activity that marks a bank group already given a block in this mapping."""

_SMALL_MAP = 8
"""Greedy mapping of at most this many new blocks on a one-set tier picks them by repeated
``argmin`` (the same order as a stable sort, without sorting every bank group)."""

_ALT = np.zeros(0, dtype=bool)


def _alternating(n: int) -> np.ndarray:
    """``n`` booleans True, False, True, ... (a read-only view of a cached array)."""
    global _ALT
    if _ALT.size < n:
        _ALT = np.tile(np.array([True, False]), max(n, 64) // 2 + 1)
        _ALT.flags.writeable = False
    return _ALT[:n]


def _binomials(rng: np.random.Generator, n: np.ndarray, p: float
               ) -> tuple[list[int], tuple[dict, dict]]:
    """``Binomial(n[j], p)`` for every ``j`` in order (the same draws as one call) and the
    generator's states after all but the last and after all."""
    a = rng.binomial(n[:-1], p).tolist()
    before_last = rng.bit_generator.state
    a.append(int(rng.binomial(n[-1], p)))
    return a, (before_last, rng.bit_generator.state)


class _Draws:
    """Random draws in bulk for the locality model: uniforms on [0, 1) and log-normal
    saliences ``exp(sigma N(0, 1))``, drawn ``size`` at a time from ``rng`` and handed out in
    order (a step needs a few dozen; one generator call per draw would cost more than the
    draws). Deterministic for a given generator state."""

    def __init__(self, rng: np.random.Generator, sigma: float, size: int = 16384):
        self.rng, self.sigma, self.size = rng, sigma, size
        self._u = self._ln = np.zeros(0)
        self._iu = self._iln = 0

    def uniform(self, k: int) -> np.ndarray:
        """``k`` uniforms on [0, 1) (a read-only view)."""
        i = self._iu
        if i + k > self._u.size:
            self._u, i = self.rng.random(max(self.size, k)), 0
        self._iu = i + k
        return self._u[i: i + k]

    def lognormal(self, k: int) -> np.ndarray:
        """``k`` log-normal saliences of log-mean 0 and log-sd ``sigma`` (a view)."""
        i = self._iln
        if i + k > self._ln.size:
            self._ln, i = self.rng.lognormal(0.0, self.sigma, max(self.size, k)), 0
        self._iln = i + k
        return self._ln[i: i + k]


@dataclass
class Tier:
    """One tier of the hierarchy, ready to price."""

    label: str
    group: GroupModel
    capacity_blocks: int
    compute: bool
    n_bg: int  # bank groups (or SSD channels) per device
    sets: int  # replica sets of the heads_over_devices dataflow
    links: int
    used: int = 0

    @property
    def link_bytes_per_s(self) -> float:
        link = self.group.link
        return 0.0 if link is None else link.bytes_per_s * self.links

    def with_refresh(self, busy_s: float) -> float:
        """``busy_s`` of attention plus the refresh its devices hold over that duration (the
        attention tables price without refresh: :mod:`pimserve.hardware.dataflow`)."""
        ref = getattr(self.group.device, "refresh_scalar_s", None)
        return busy_s + ref(float(busy_s)) if ref is not None and busy_s > 0 else busy_s

    def link_time(self, nbytes: float) -> float:
        link = self.group.link
        if link is None or nbytes <= 0:
            return 0.0
        return link.latency_s + nbytes / self.link_bytes_per_s

    def link_energy(self, nbytes: float) -> float:
        link = self.group.link
        return 0.0 if link is None else nbytes * 8 * link.spec.energy_pj_per_bit * 1e-12

    def partials_out(self, nbytes: float, io: bool) -> tuple[float, float]:
        """(s, J) for ``nbytes`` of partial results to leave the tier's devices for the GPUs:
        over the tier's link, or, for a tier without one (HBM-PIM stacks that are the GPUs'
        own memory) and with ``io``, over its devices' I/O (``io_bw_gbps`` each, all devices
        in parallel)."""
        if self.group.link is not None:
            return self.link_time(nbytes), self.link_energy(nbytes)
        if not io:
            return 0.0, 0.0
        dev = self.group.device
        bw = float(getattr(dev, "io_bytes_per_s", 0.0)) * self.group.count
        if bw <= 0 or nbytes <= 0:
            return 0.0, 0.0
        return nbytes / bw, nbytes * 8 * float(getattr(dev, "io_pj_per_bit", 0.0)) * 1e-12


def _with_refresh_rows(t: Tier, busy_s: np.ndarray) -> np.ndarray:
    """:meth:`Tier.with_refresh` of each of ``busy_s`` (s), with the same arithmetic: the
    devices' refresh fixed point (:meth:`PIMModel.refresh_scalar_s`) on every element at
    once."""
    dev = t.group.device
    refi, each = getattr(dev, "_refi_s", None), getattr(dev, "_refresh_each_s", None)
    if refi is None or each is None or getattr(dev, "refresh_scalar_s", None) is None:
        return np.array([t.with_refresh(b) for b in busy_s.tolist()])
    n = np.floor(busy_s / refi)
    while True:  # as the scalar loop: an element stays once it is a fixed point
        m = np.floor((busy_s + n * each) / refi)
        if (m == n).all():
            break
        n = m
    return busy_s + n * each  # (0 s busy: 0 refreshes, 0 + 0)


def _first_set(*values: bool | None) -> bool:
    """The first value that is not None: the run option, then the system's, then the policy's."""
    return next(v for v in values if v is not None)


def _bank_groups(group: GroupModel) -> int:
    dev = group.device
    if isinstance(dev, PIMModel):
        d = dev.spec.dram
        return d.channels * d.pseudo_channels * d.ranks * d.bank_groups
    if isinstance(dev, SSDPIMModel):
        return dev.spec.channels
    return 1


@dataclass(slots=True)
class KVStep:
    """One decode step's attention and KV-movement cost, all layers, with its breakdown."""

    write_s: float = 0.0  # new KV written to lower tiers (``step(..., reserve=True)``)
    attention_s: float = 0.0  # the slowest tier's local attention and partials, + reduction
    attention_j: float = 0.0
    communication_s: float = 0.0  # offloaded KV fetch not hidden behind the GPU's attention
    migration_s: float = 0.0
    by_tier_s: tuple[float, ...] = ()  # each tier's local attention (s), in tier order
    partials_by_tier_s: tuple[float, ...] = ()  # each tier's partial results to the merger (s)
    reduction_s: float = 0.0  # PAMattention's inter-device reduction on HBM-PIM's RUs (s)
    fetch_s: float = 0.0  # offloaded KV fetched to the GPU, hidden or not (s)


class KVHierarchy:
    """Per-block KV state of the running requests on a system's tiers, and its pricing.

    Layout (chosen for speed: a decode step is a few dozen numpy calls whatever the number of
    tiers). Per slot and block: ``_bgx`` the block's bank-group code (0: no block; tier ``k``'s
    bank groups are codes ``_bg_off[k] .. + sets x n_bg``, so a code gives both the tier and
    the bank group, and one ``bincount`` every tier's bank-group load), ``_sal`` its salience and
    ``_imp`` its importance. Beyond a slot's ``nblk`` blocks, code, salience and importance are
    0, so blocks past a request's length score 0 without masking. Row ``max_slots`` is a
    sentinel, always empty: requests without a slot (``slot_of`` -1) index it. A step gathers
    whole rows (``take``) while the widest request is at most twice the step's longest one,
    else its columns only; the row sums run over the step's longest request either way, so
    the results do not depend on the choice.
    """

    def __init__(
        self,
        built: BuiltSystem,
        model: ModelSpec,
        cfg: RunConfig,
        rng: np.random.Generator,
        max_slots: int,
        n_requests: int,
    ):
        spec: KVPolicySpec = built.spec.policies.kv
        name = cfg.kv_placement or spec.placement
        self.policy: KVPlacement = KV_PLACEMENT.get(name)
        self.model, self.cfg, self.rng = model, cfg, rng
        self.block_tokens = B = cfg.kv_block_tokens
        self.block_bytes = float(model.kv_bytes_per_token * B)
        self._block_shift = None if B & (B - 1) else B.bit_length() - 1
        p = self.policy
        self.ratio = float(cfg.sparse_ratio or spec.sparse_ratio or p.sparse_ratio)
        self.sparse = self.ratio > 1.0
        self.mapping = cfg.kv_mapping or spec.mapping or p.mapping
        self.pamattention = _first_set(cfg.pamattention, spec.pamattention, p.pamattention)
        self.scheduling = _first_set(cfg.kv_scheduling, spec.scheduling, p.scheduling)
        self.x, self.y = cfg.kv_x or spec.x, cfg.kv_y or spec.y
        self.lam = spec.ema_lambda
        self.window = spec.mapping_window
        self.migration = cfg.migration or spec.migration
        self.loc: LocalitySpec = spec.locality
        self._draws = _Draws(rng, self.loc.salience_sigma)
        # the summary model (see "The summary model" in the module docstring): columns per
        # request before cold blocks merge (None: exact), and the recent columns never merged
        self.summary_columns: int | None = (
            cfg.kv_summary_columns if cfg.kv_model == "summary" else None
        )
        S = self.summary_columns or 0
        self._tail_cols = min(int(np.ceil(16 * self.loc.recency_blocks)), S // 4)
        self._merged = False  # some request's blocks were merged (the weighted paths exist)

        groups = built.spec.tiers()
        models = built.tiers
        if not models:
            raise ConfigurationError(f"system {built.spec.name} has no kv_tier groups")
        if p.fill == "first":
            groups, models = groups[:1], models[:1]
        if not groups[0].compute:
            raise ConfigurationError(
                f"system {built.spec.name}: the first kv_tier ({groups[0].tier}) must compute "
                "attention (compute: true); later tiers may be plain memory"
            )
        self.tiers: list[Tier] = []
        weights = float(model.weight_bytes)
        for g, gm in zip(groups, models, strict=True):
            cap = gm.capacity_bytes
            if "weights" in g.holds:
                cap -= weights * cap / built.weight_capacity_bytes
            blocks = int(max(cap, 0) // self.block_bytes)
            sets = gm.attention_sets(model.n_kv_heads)[1]
            self.tiers.append(Tier(g.tier or g.device, gm, blocks, g.compute, _bank_groups(gm),
                                   sets, g.links or g.count))
        self.capacity_blocks = sum(t.capacity_blocks for t in self.tiers)
        if self.capacity_blocks < 1:
            raise ConfigurationError(
                f"system {built.spec.name}'s KV tiers have no room left for KV blocks of {B} "
                "tokens after the weights"
            )
        nt = len(self.tiers)
        self.n_tiers = nt
        self._zero_tail = (0.0,) * (nt - 1)  # the other tiers' entries of a one-tier step
        # which per-step quantities some later computation reads
        # the EMA feeds Algorithm 2 only, which runs while the KV spans more than one tier: it
        # is kept from a block's first step on such a hierarchy (see ``step``)
        self._need_imp = bool(self.scheduling) and nt > 1
        self._imp_stale = False  # steps ran on one tier since the EMA was last updated
        # salience > 0 always (a log-normal far from float32's limits, or 1): every resident
        # block scores > 0, so a request's k-th best block is resident and the score sums > 0
        self._positive_scores = self.loc.salience_sigma <= 4.0
        # implementation choices that do not change results (tests switch them)
        self._wide_factor = 2  # gather whole rows while cols <= this x the step's longest
        self._fast_one_tier = True  # _step_one_tier where it applies
        self._fold_sink = True  # fold a power-of-two sink boost into the recency table
        self._incremental_resident = True  # resident bank-group loads from _held (_resident)
        t0 = self.tiers[0]
        self._one_tier_ok = (self.sparse and t0.sets == 1 and self._block_shift is not None
                             and self.loc.salience_sigma > 0)
        # --- bank-group codes: 0 = no block, then each tier's (set, bank group) in turn
        self._bg_total = [t.sets * t.n_bg for t in self.tiers]
        self._bg_off = [1 + int(v) for v in np.cumsum([0, *self._bg_total])[:-1]]
        n_codes = 1 + sum(self._bg_total)
        self._n_codes = n_codes
        self._tier_of_code = np.full(n_codes, -1, dtype=np.int8)
        # each code's replica set: its first code and its bank groups (a merged column's
        # blocks spread over consecutive bank groups of its set, from its own)
        self._set_base = np.zeros(n_codes, dtype=np.int64)
        self._set_nbg = np.ones(n_codes, dtype=np.int64)
        for k, (o, nb) in enumerate(zip(self._bg_off, self._bg_total, strict=True)):
            self._tier_of_code[o: o + nb] = k
            n_bg = self.tiers[k].n_bg
            self._set_base[o: o + nb] = o + (np.arange(nb) // n_bg) * n_bg
            self._set_nbg[o: o + nb] = n_bg
        # the summary model's histogram of a request's merged blocks by bank group: tier k's
        # bank groups (of the request's replica set) are columns hoff[k] .. hoff[k + 1] - 1
        self._hoff = [0, *np.cumsum([t.n_bg for t in self.tiers]).tolist()]
        self._hcol = np.zeros(n_codes, dtype=np.int64)
        for k, o in enumerate(self._bg_off):
            codes = np.arange(o, o + self._bg_total[k])
            self._hcol[codes] = self._hoff[k] + (codes - self._set_base[codes])
        # --- per-block state, [slot, block] (+ the sentinel row)
        self.max_slots = max_slots
        self._cols = 64
        code_dtype = np.int16 if n_codes < 1 << 15 else np.int32
        self._bgx = np.zeros((max_slots + 1, self._cols), dtype=code_dtype)
        self._sal = np.zeros((max_slots + 1, self._cols), dtype=np.float32)
        self._imp = np.zeros((max_slots + 1, self._cols), dtype=np.float32)
        # every code's count over all of _bgx (code 0 aside), kept by the general step's
        # writes (_hold); None where other writes (the summary model's, the one-tier paths',
        # which never read it) have made it stale: recounted when next needed
        self._held: np.ndarray | None = None
        # blocks each column stands for (1 until the summary model merges; 1 past a request's
        # columns, which the masks exclude)
        self._wt = np.ones((max_slots + 1, self._cols), dtype=np.int64)
        #: round-robin mapping on the summary model: each column's block index in its request
        #: (its sample's for a merged column; -1 where unknown: a block split off merged
        #: ones), which maps a block that Algorithm 2 moves as the exact model maps it
        self._idx: np.ndarray | None = None
        if self.summary_columns is not None and self.mapping == "round-robin":
            self._idx = np.full((max_slots + 1, self._cols), -1, dtype=np.int32)
        self._mh = np.zeros((max_slots + 1, self._hoff[-1] if self.summary_columns else 0),
                            dtype=np.int64)
        # of those, the blocks the request's last step read, by bank group (``_loads``)
        self._mr = np.zeros_like(self._mh)
        # each request's last selection threshold (score of the coldest block read; 0: all)
        self._thr = np.zeros(max_slots + 1, dtype=np.float32)
        self._has_merged = np.zeros(max_slots + 1, dtype=bool)  # slot is summarised
        # a request is summarised once it holds more than this many blocks: the run option,
        # lowered where one column per block for every slot would pass 1 GiB
        budget_cols = (2**30) // self.state_bytes(1)
        self._exact_max = max(S, min(cfg.kv_exact_max_blocks, budget_cols))
        self.nblk = np.zeros(max_slots + 1, dtype=np.int64)  # columns held (= blocks if exact)
        self.slot_of = np.full(max(n_requests, 1), -1, dtype=np.int64)  # request id -> slot
        self._free_slots = list(range(max_slots - 1, -1, -1))
        # --- bank-group activity (greedy mapping): ring of the last `window` steps, by code
        self._act = np.zeros((self.window, n_codes), dtype=np.int64)
        self._offload_cols = [(o, o + n) for o, n, t in
                              zip(self._bg_off, self._bg_total, self.tiers, strict=True)
                              if not t.compute]
        self._ring = 0
        self._act_version = 0  # bumped whenever the activity history changes
        self._orders_version = -1
        self._orders: list[np.ndarray | None] = [None] * nt
        self._act_sum = np.zeros(n_codes, dtype=np.int64)  # the window's sum, kept current
        # --- pricing tables, by (tier, q_tokens, kind)
        self._tables = AttentionTables(model)
        self._pairs: dict[tuple[int, int], np.ndarray] = {}
        self._pair_cols: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._rec = np.zeros(0, dtype=np.float32)
        self._recw = np.zeros((1, 0), dtype=np.float32)  # [blocks, block] recency (x sink)
        self._sink_folded = False
        self._ktab = np.zeros(1, dtype=np.int64)  # blocks -> blocks the sparse attention reads
        self._wcols = 0
        self._ar = np.arange(max_slots)
        self._ones = np.ones(2 * max_slots)
        self._hbm_ru = self._reduction_rate(self.tiers[0])
        # --- metrics
        self.migrated_bytes = 0.0
        self.read_blocks = 0.0
        self.resident_blocks = 0.0
        self.steps = 0
        # blocks resident per tier summed over steps, and the peak, accumulated lazily: a
        # tier's count is constant between changes, so each change (``_use``) first credits
        # the steps since the tier's last change with the count they saw
        self._used_sum = [0] * nt
        self._used_peak = [0] * nt
        self._used_since = [0] * nt  # self.steps at the tier's last change
        self._attn_by_tier = [0.0] * nt
        self.written_bytes = np.zeros(nt)
        #: (run, steps applied) of the last committed run while nothing else has stepped or
        #: reserved since (:meth:`KVRun.take_step`)
        self._run_mark: tuple[int, int] | None = None

    # ------------------------------------------------------------------ views and metrics
    @property
    def tier(self) -> np.ndarray:
        """Tier of each block, ``[slot, block]`` (-1: no block); a computed copy."""
        return self._tier_of_code[self._bgx[: self.max_slots]]

    @property
    def bg(self) -> np.ndarray:
        """Bank group of each block (global over tiers), ``[slot, block]``; a computed copy."""
        return self._bgx[: self.max_slots] - 1

    @property
    def sal(self) -> np.ndarray:
        """Latent salience of each block (locality model), ``[slot, block]`` (a view)."""
        return self._sal[: self.max_slots]

    @property
    def imp(self) -> np.ndarray:
        """Importance (PAM's EMA) of each block, ``[slot, block]`` (a view; until the block's
        first step 0, or NaN for salience sigma > 4 where a score may be 0; kept only where
        Algorithm 2 reads it)."""
        return self._imp[: self.max_slots]

    @property
    def used_block_steps(self) -> np.ndarray:
        """Blocks resident on each tier, summed over steps (block x steps)."""
        for k in range(self.n_tiers):
            self._use(k, 0)
        return np.array(self._used_sum, dtype=np.float64)

    @property
    def peak_used_blocks(self) -> np.ndarray:
        """Most blocks resident on each tier at the start of a step (blocks)."""
        for k in range(self.n_tiers):
            self._use(k, 0)
        return np.array(self._used_peak, dtype=np.int64)

    def _use(self, k: int, delta: int) -> None:
        """Change tier ``k``'s resident blocks by ``delta``, first crediting the steps that
        saw the old count to the residency sums."""
        t = self.tiers[k]
        since = self.steps - self._used_since[k]
        if since:
            self._used_sum[k] += t.used * since
            if t.used > self._used_peak[k]:
                self._used_peak[k] = t.used
            self._used_since[k] = self.steps
        t.used += delta

    @property
    def runs_possible(self) -> bool:
        """Whether :meth:`decode_run` can ever price runs of steps on this hierarchy: sparse
        reads, one replica set on the first tier, power-of-two blocks, a salience model
        (it then prices them while every block is on the first tier)."""
        return self._one_tier_ok

    @property
    def attention_by_tier_s(self) -> np.ndarray:
        """Decode attention time of each tier, all layers, summed over steps (s)."""
        return np.array(self._attn_by_tier, dtype=np.float64)

    # ------------------------------------------------------------------ bookkeeping
    @staticmethod
    def _reduction_rate(t: Tier) -> float:
        dev = t.group.device
        rate = getattr(dev, "ru_elems_per_s", 0.0) if isinstance(dev, PIMModel) else 0.0
        return float(rate) * t.group.count

    #: bound on the per-block state (slots x blocks x 10 B) plus one step's [requests x blocks]
    #: temporaries (about 6 float64 arrays), bytes
    MAX_STATE_BYTES = 8 * 2**30

    def state_bytes(self, cols: int) -> int:
        """Bytes the KV state needs when the widest request holds ``cols`` columns."""
        rows = self.max_slots + 1
        idx = 4 if getattr(self, "_idx", None) is not None else 0
        return rows * cols * (2 + 4 + 4 + 8 + idx) + rows * cols * 6 * 8

    def _grow(self, cols: int) -> None:
        need = self.state_bytes(cols)
        if need > self.MAX_STATE_BYTES:
            raise ConfigurationError(
                f"a request of {cols:,} KV blocks ({cols * self.block_tokens:,} tokens at "
                f"kv_block_tokens={self.block_tokens}) next to {self.max_slots} running requests "
                f"needs {need / 2**30:,.1f} GiB of per-block KV state, over the "
                f"{self.MAX_STATE_BYTES / 2**30:.0f} GiB bound: raise kv_block_tokens, lower "
                "the batch, or shorten the requests"
            )
        max_cols = self.MAX_STATE_BYTES // self.state_bytes(1)
        new = min(max(cols, 2 * self._cols), max_cols)
        pad = new - self._cols

        def widen(a: np.ndarray, fill: int = 0) -> np.ndarray:
            return np.concatenate([a, np.full((a.shape[0], pad), fill, dtype=a.dtype)], axis=1)

        self._bgx, self._sal, self._imp = widen(self._bgx), widen(self._sal), widen(self._imp)
        self._wt = widen(self._wt, 1)
        if self._idx is not None:
            self._idx = widen(self._idx, -1)
        self._cols = new

    def _recency_rows(self, n: np.ndarray) -> np.ndarray:
        """Rows ``n`` of the recency table. ``take`` is fastest on the small folded table;
        on the strided view of a wide one it would first copy the whole (cols + 1) x cols
        view, so rows are gathered by indexing instead (same values)."""
        w = self._recw
        return w.take(n, axis=0, mode="wrap") if w.flags.c_contiguous else w[n]

    def _build_recency(self) -> None:
        """Recency boost ``W[n, j] = rec[max(n - 1 - j, 0)]`` for a request of ``n`` blocks
        (0 <= n <= cols) and its block ``j``, and the blocks the sparse attention reads by
        blocks, ``max(ceil(n / ratio), 1)``.

        ``W`` is a strided view (no copy); for up to 2048 columns it is a table with the sink
        boost folded into column 0 when that is exact (a power-of-two boost, salience far from
        float32's limits: scaling by a power of two commutes with rounding) and row 0 (no
        blocks) zero."""
        cols, loc = self._cols, self.loc
        if self._rec.size < cols:
            d = np.arange(max(cols, 2 * self._rec.size), dtype=np.float32)
            self._rec = (1.0 + loc.recency_boost * np.exp(-d / loc.recency_blocks)).astype(
                np.float32
            )
        base = self._rec[np.maximum(np.arange(2 * cols) - cols, 0)]
        w = np.lib.stride_tricks.as_strided(
            base[cols - 1:], shape=(cols + 1, cols), strides=(base.strides[0], -base.strides[0]),
            writeable=False,
        )
        sink = float(loc.sink_boost)
        mant, _ = np.frexp(sink)
        self._sink_folded = (self._fold_sink and cols <= 2048 and mant == 0.5
                             and self._positive_scores)
        if self._sink_folded:
            w = w.copy()
            w[:, 0] *= sink
            w[0] = 0.0  # a request without blocks scores 0 everywhere
        self._recw = w
        k = np.ceil(np.arange(cols + 1) / self.ratio).astype(np.int64)
        self._ktab = np.maximum(k, 1)
        self._wcols = cols

    def _slots(self, reqs: np.ndarray) -> np.ndarray:
        out = self.slot_of[reqs]
        if out.size and out.min() < 0:
            new = np.nonzero(out < 0)[0]
            if new.size > len(self._free_slots):
                raise AssertionError("more running requests than KV slots")  # pragma: no cover
            for i in new.tolist():
                out[i] = self._free_slots.pop()
            self.slot_of[reqs[new]] = out[new]
        return out

    def release(self, reqs: np.ndarray) -> None:
        """Free the blocks of finished or preempted requests."""
        reqs = np.asarray(reqs, dtype=np.int64)
        if reqs.size == 0:
            return
        if reqs.size > 1 and len(set(reqs.tolist())) != reqs.size:
            for r in reqs.tolist():  # a request named twice: free it once, in order
                self.release(np.asarray([r]))
            return
        s = self.slot_of[reqs]
        self.slot_of[reqs] = -1
        s = s[s >= 0]
        if s.size == 0:
            return
        counts = self._free(s)
        for k in range(self.n_tiers):
            if counts[k + 1]:
                self._use(k, -counts[k + 1])

    def _free(self, s: np.ndarray) -> list[int]:
        """Clear slots ``s`` (their requests' mapping already dropped) and return them to the
        free list, in order; returns the blocks they held by tier, ``[-, tier 0, tier 1,
        ...]``, for the caller to take off the tiers' resident counts."""
        cm = int(self.nblk[s].max())
        counts = [0] * (self.n_tiers + 1)
        if cm:
            t = self._tier_of_code[self._bgx[s, :cm]]
            w = None
            if self._merged:
                w = self._wt[s, :cm].ravel()
                self._wt[s, :cm] = 1
                self._mh[s] = 0
                self._mr[s] = 0
                self._thr[s] = 0.0
                self._has_merged[s] = False
            counts = np.bincount(t.ravel() + 1, weights=w,
                                 minlength=self.n_tiers + 1).astype(np.int64).tolist()
            self._hold(self._bgx[s, :cm], -1)
            self._bgx[s, :cm] = 0
            if self._idx is not None:
                self._idx[s, :cm] = -1
            self._sal[s, :cm] = 0.0
            self._imp[s, :cm] = 0.0
        self.nblk[s] = 0
        self._free_slots.extend(s.tolist())
        return counts

    def _hold(self, codes: np.ndarray | int, sign: int, size: int = 1) -> None:
        """Count ``codes`` (written over code 0, ``sign`` 1; or cleared to 0, -1) in
        ``_held``; ``size``: how many blocks a scalar code stands for."""
        held = self._held
        if held is None:
            return
        if type(codes) is np.ndarray and codes.ndim:
            h = np.bincount(codes.ravel(), minlength=self._n_codes)
            if sign > 0:
                held += h
            else:
                held -= h
        else:
            held[int(codes)] += sign * size

    def _rehold(self, rows: np.ndarray, cols: np.ndarray, codes: np.ndarray | int) -> None:
        """Move the blocks at ``rows, cols`` to bank-group ``codes``, keeping ``_held``."""
        if self._held is not None:
            self._hold(self._bgx[rows, cols], -1)
            self._hold(codes, 1, rows.size)
        self._bgx[rows, cols] = codes

    def _resident(self, slots: np.ndarray, bgs: np.ndarray) -> np.ndarray:
        """The step's resident blocks by bank-group code (code 0's count aside) of the
        requests in ``slots``, whose blocks ``bgs`` holds: every code's count over all of
        ``_bgx`` less the blocks of requests outside the step (most steps: none), rather than
        one count over the step's blocks each step. The same integers as
        ``np.bincount(bgs.ravel())`` at codes 1 and up."""
        n = self._n_codes
        if not self._incremental_resident:
            return np.bincount(bgs.ravel(), minlength=n)
        held = self._held
        if held is None:
            held = self._held = np.bincount(self._bgx.ravel(), minlength=n)
        out = held.copy()
        hold = self.nblk[: self.max_slots] > 0
        hold[slots] = False  # (a stepping request holds a slot: step assigns the new ones)
        if hold.any():
            others = np.flatnonzero(hold)
            cm = int(self.nblk[others].max())
            out -= np.bincount(self._bgx[others, :cm].ravel(), minlength=n)
        return out

    def _recent_activity(self) -> np.ndarray:
        """Activations of every bank group (by code) over the last ``mapping_window`` steps
        (kept current by ``step``); drops the bank-group orders cached for an older history."""
        if self._orders_version != self._act_version:
            self._orders = [None] * self.n_tiers
            self._orders_version = self._act_version
        return self._act_sum

    def _bg_order(self, k: int) -> np.ndarray:
        """Tier ``k``'s bank-group codes, ``[set, rank]``: each set's bank groups by ascending
        activity over the last ``mapping_window`` steps (stable: ties by index)."""
        act = self._recent_activity()
        order = self._orders[k]
        if order is None:
            t, off = self.tiers[k], self._bg_off[k]
            act = act[off: off + self._bg_total[k]].reshape(t.sets, t.n_bg)
            order = np.argsort(act, axis=1, kind="stable")
            order += off + t.n_bg * np.arange(t.sets)[:, None]
            self._orders[k] = order
        return order

    def _map(
        self, k: int, slots: np.ndarray, cols: np.ndarray, start: np.ndarray | None = None
    ) -> np.ndarray | int:
        """Bank-group codes on tier ``k`` for new blocks of ``slots`` at columns ``cols``.

        Round-robin: bank group ``col mod n_bg`` of the slot's replica set. Greedy (PAM 6.1):
        the new blocks of each replica set take its bank groups in order of increasing recent
        activity (the i-th new block of a set the i-th least active, cycling). ``start``
        (greedy): each replica set's blocks mapped by earlier calls of the same allocation
        (the summary model's rounds of a long prompt), whose cycle the new blocks continue,
        as in one call; updated in place."""
        t = self.tiers[k]
        off = self._bg_off[k]
        if self.mapping == "round-robin" or t.n_bg == 1:
            code = cols % t.n_bg + off
            if t.sets > 1:
                code += (slots % t.sets) * t.n_bg
            return code
        if start is not None:
            sets = slots % t.sets
            first = start.copy()
            start += np.bincount(sets, minlength=t.sets)
            if first.any():
                by_set = np.argsort(sets, kind="stable")
                srt = sets[by_set]
                rank = np.empty(len(slots), dtype=np.int64)
                rank[by_set] = np.arange(len(slots)) - np.searchsorted(srt, srt)
                return self._bg_order(k)[sets, (rank + first[sets]) % t.n_bg]
        size = len(slots)
        if t.sets == 1 and size == 1:  # the least active bank group (the first of equals)
            act = self._recent_activity()[off: off + t.n_bg]
            return off + int(act.argmin())
        if t.sets == 1 and size <= min(_SMALL_MAP, t.n_bg):  # the stable order's first few
            act = self._recent_activity()[off: off + t.n_bg].copy()
            code = np.empty(size, dtype=np.int64)
            for i in range(size):
                j = int(act.argmin())
                code[i] = off + j
                act[j] = _TAKEN
            return code
        order = self._bg_order(k)
        if t.sets == 1:
            if size <= t.n_bg:
                return order[0, :size]
            return order[0, np.arange(size) % t.n_bg]
        sets = slots % t.sets
        by_set = np.argsort(sets, kind="stable")
        srt = sets[by_set]
        rank = np.empty(size, dtype=np.int64)
        rank[by_set] = np.arange(size) - np.searchsorted(srt, srt)
        return order[sets, rank % t.n_bg]

    def write_time_since(self, written0: np.ndarray) -> float:
        """The link time (s) of the KV written to tiers other than the first since
        ``written_bytes`` was ``written0``, each tier's bytes as one transfer."""
        return sum((self.tiers[k].link_time(float(self.written_bytes[k] - written0[k]))
                    for k in range(1, self.n_tiers)), 0.0)

    def reserve(self, reqs: np.ndarray, tokens: np.ndarray, in_last_step: bool = False) -> float:
        """Allocate blocks so request ``reqs[i]`` holds ``tokens[i]`` tokens; returns the link
        time (s) of the new KV written to tiers other than the first. ``in_last_step``:
        the blocks are written during the step just taken (a prefill beside the decode
        step), so they count as resident from that step on."""
        self._run_mark = None
        if reqs.size == 0:
            return 0.0
        before = [t.used for t in self.tiers] if in_last_step else None
        if self._summarise(reqs, tokens):
            self._held = None  # (the summary model's writes: recounted when next needed)
            out = self._reserve_summary(reqs, tokens)[0]
        else:
            out = self._reserve(reqs, tokens)[0]
        if before is not None:  # the blocks' share of the last step's residency
            for k, (t, u) in enumerate(zip(self.tiers, before, strict=True)):
                if t.used > u:
                    self._used_sum[k] += t.used - u
                    self._used_peak[k] = max(self._used_peak[k], t.used)
        return out

    def _reserve(
        self, reqs: np.ndarray, tokens: np.ndarray, start: list[np.ndarray] | None = None,
        index: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`reserve` for ``reqs`` (not empty); returns (link time s, the requests' slots,
        their blocks afterwards). The summary model's rounds pass ``start``, each tier's
        blocks mapped by the allocation's earlier rounds (:meth:`_map`), and ``index``, each
        request's blocks held minus its columns (round-robin maps a block by its index in the
        request, not its column)."""
        slots = self.slot_of[reqs]
        have = self.nblk.take(slots, mode="wrap")  # a request without a slot: the sentinel's 0
        if not min(have.tolist()) > 0:
            slots = self._slots(reqs)
        B = self.block_tokens
        if not isinstance(tokens, np.ndarray):
            tokens = np.asarray(tokens, dtype=np.int64)
        shift = self._block_shift  # a power-of-two block: the same ceiling by a shift
        need = (tokens + (B - 1)) // B if shift is None else (tokens + (B - 1)) >> shift
        grow = need - have
        gmax = max(grow.tolist())
        if gmax <= 0:
            return 0.0, slots, have
        if gmax == 1:  # one new block each (decode steps)
            idx = np.flatnonzero(grow > 0)
            rows, cols = slots.take(idx, mode="wrap"), have.take(idx, mode="wrap")
            total = idx.size
        else:
            np.maximum(grow, 0, out=grow)
            total = int(grow.sum())
            rows = np.repeat(slots, grow)
            cols = np.repeat(have - (np.cumsum(grow) - grow), grow) + np.arange(total)
        # tiers in order, each up to its room
        parts = []
        pos = 0
        for k, t in enumerate(self.tiers):
            take = max(0, min(t.capacity_blocks - t.used, total - pos))
            if take:
                parts.append((k, pos, pos + take))
                pos += take
            if pos == total:
                break
        if pos < total:
            raise AssertionError("KV blocks over capacity")  # pragma: no cover
        at = cols
        if index is not None and self.mapping == "round-robin":
            at = cols + (index.take(idx) if gmax == 1 else np.repeat(index, grow))
        if len(parts) == 1:
            k = parts[0][0]
            code = self._map(k, rows, at, None if start is None else start[k])
            try:
                self._bgx[rows, cols] = code
            except IndexError:  # a block beyond the widest request so far
                self._grow(int(need.max()))
                self._bgx[rows, cols] = code
            self._hold(code, 1, total)
        else:
            if int(need.max()) > self._cols:
                self._grow(int(need.max()))
            for k, a, b in parts:
                code = self._map(k, rows[a:b], at[a:b], None if start is None else start[k])
                self._bgx[rows[a:b], cols[a:b]] = code
                self._hold(code, 1, b - a)
        if self._idx is not None:
            self._idx[rows, cols] = at
        written = 0.0
        for k, a, b in parts:
            self._use(k, b - a)
            if k > 0:
                nb = float(b - a) * self.block_bytes
                self.written_bytes[k] += nb
                written += self.tiers[k].link_time(nb)
        sigma = self.loc.salience_sigma
        self._sal[rows, cols] = self._draws.lognormal(total) if sigma else 1.0
        if self._need_imp and not self._positive_scores:
            self._imp[rows, cols] = np.nan  # (else 0 already marks a block never stepped)
        if gmax == 1:
            self.nblk[rows] = cols + 1
        else:
            self.nblk[slots] = have + grow
        return written, slots, np.maximum(have, need)

    # ------------------------------------------------------------------ pricing tables
    def _table(self, k: int, q_tokens: int, cmax: int, selection: bool) -> tuple[np.ndarray, ...]:
        """Per-request (time, energy) of one layer's local attention on one replica set of tier
        ``k`` by tokens read (or, for ``selection``, the approximate-score pass)."""
        t = self.tiers[k]
        if selection:
            hd = max(1, round(self.model.head_dim / DS_CHANNEL_RATIO))
            return self._tables.get(t.group, q_tokens, cmax, hd, ("score",))
        # a sparse read gathers selected blocks: scattered runs of a block's tokens
        run = self.block_tokens if self.sparse else 0
        return self._tables.get(t.group, q_tokens, cmax, read_run_tokens=run)

    def _pair_table(self, k: int, q_tokens: int, cmax: int) -> np.ndarray:
        """Tier ``k``'s costs by tokens ``0 .. size - 1`` (size > ``cmax``) as one array
        ``[kind x size + tokens, (time s, energy J)]``: kind 0 the local attention, kind 1
        (sparse only) the approximate-score pass."""
        key = (k, q_tokens)
        tab = self._pairs.get(key)
        if tab is None or tab.shape[0] <= (1 + self.sparse) * cmax:
            parts = [self._table(k, q_tokens, cmax, False)]
            if self.sparse:
                parts.append(self._table(k, q_tokens, cmax, True))
            size = min(p[0].shape[0] for p in parts)
            tab = np.empty((len(parts), size, 2))
            for i, (t, e) in enumerate(parts):
                tab[i, :, 0] = t[:size]
                tab[i, :, 1] = e[:size]
            tab = tab.reshape(-1, 2)
            self._pairs[key] = tab
        return tab

    def _pair_columns(self, k: int, q_tokens: int, cmax: int) -> tuple[np.ndarray, ...]:
        """:meth:`_pair_table`'s two columns apart, each contiguous: (time s, energy J) by
        ``kind x size + tokens`` (cached with the table)."""
        tab = self._pair_table(k, q_tokens, cmax)
        cols = self._pair_cols.get((k, q_tokens))
        if cols is None or cols[0] is not tab:
            cols = (tab, np.ascontiguousarray(tab[:, 0]), np.ascontiguousarray(tab[:, 1]))
            self._pair_cols[k, q_tokens] = cols
        return cols[1], cols[2]

    # ------------------------------------------------------------------ one step
    def _drift(self, slots: np.ndarray, n: np.ndarray, nv: int) -> None:
        """A few blocks redraw their salience (importance persists and drifts slowly): among
        the step's ``nv`` blocks (request ``i`` holding ``n[i]``), ``k ~ Binomial(nv,
        drift_per_step)`` redraws, each of a block drawn uniformly (its request with
        probability ``n[i] / nv``, then one of its blocks), so that every block, of a short
        request or a long one, redraws at that rate per step."""
        loc = self.loc
        if loc.drift_per_step > 0 and loc.salience_sigma > 0:
            k = self.rng.binomial(nv, loc.drift_per_step) if nv else 0
            if k:
                u = self._draws.uniform(2 * k)
                r = np.add.accumulate(n).searchsorted(u[:k] * nv, "right")
                c = (u[k:] * n.take(r, mode="wrap")).astype(np.intp)
                self._sal[slots.take(r, mode="wrap"), c] = self._draws.lognormal(k)

    def _activate(self, ring: int, reads: np.ndarray, resident: np.ndarray | None) -> None:
        """Record this step's bank-group activations in the greedy mapping's window: the
        blocks read and, with sparse reads, every resident block (the selection pass scans
        them all; PAM 6.1 balances activations); offloaded tiers' codes hold none."""
        act = reads if resident is None else reads + resident
        act[0] = 0
        for a, b in self._offload_cols:
            act[a:b] = 0
        self._act_version += 1
        self._act_sum -= self._act[ring]
        self._act[ring] = act
        self._act_sum += act

    def _set_imbalance(self, k: int, load: np.ndarray) -> np.ndarray:
        """Each replica set of tier ``k``: its busiest bank group's load over its mean (1
        where the set has none), from ``load`` by bank-group code (all codes)."""
        t = self.tiers[k]
        off = self._bg_off[k]
        lw = load[off: off + self._bg_total[k]].reshape(t.sets, t.n_bg)
        mean = np.add.reduce(lw, axis=1) / t.n_bg
        return np.divide(np.maximum.reduce(lw, axis=1), mean, out=np.ones(t.sets),
                         where=mean > 0)

    def _imbalance0(self, load: np.ndarray) -> float:
        """:meth:`_set_imbalance` of the first tier when it has one replica set: its busiest
        bank group's load over their mean (1 without load), as a float (the same
        arithmetic, without the per-set arrays)."""
        off = self._bg_off[0]
        lw = load[off: off + self._bg_total[0]]
        total = int(np.add.reduce(lw))
        if total <= 0:
            return 1.0
        return int(lw.max()) / (total / self.tiers[0].n_bg)

    def _price(
        self, k: int, cnt: np.ndarray, parts: int, slots: np.ndarray, reads: np.ndarray,
        q_tokens: int, width_tokens: int, ctx: np.ndarray, energy: float,
        resident: np.ndarray | None = None,
    ) -> tuple[float, float, float]:
        """One layer's local attention on tier ``k`` (a computing tier). ``cnt`` holds each
        request's blocks read and resident on the tier (overwritten); ``reads``: the step's
        blocks read by bank-group code. ``resident``: the
        step's resident blocks by bank-group code; with sparse reads the selection pass
        reads every resident block, so its bank groups wait on those, while the attention's
        wait on the blocks read. Returns (time s, ``energy`` J plus the tier's, time s of
        the partial results' transfer)."""
        t = self.tiers[k]
        R = cnt.shape[1]
        np.multiply(cnt, self.block_tokens, out=cnt)
        np.minimum(cnt, ctx, out=cnt)  # cnt[0]: tokens read, cnt[1]: tokens resident
        tab = self._pair_table(k, q_tokens, width_tokens)
        if self.sparse:
            cnt[1] += tab.shape[0] // 2  # the selection pass's rows of the table
            g = tab.take(cnt.ravel(), axis=0, mode="wrap")  # [(kind, request), (s, J)]
            read_s, select_s = g[:R, 0], g[R:, 0]
        else:
            g = tab.take(cnt[1], axis=0, mode="wrap")
            read_s, select_s = g[:, 0], None
        energy += float(np.add.reduce(g[:, 1]))
        imb = self._set_imbalance(k, reads)  # >= 1
        if t.sets == 1:
            busy = float(np.add.reduce(read_s)) * float(imb[0])
        else:
            busy = np.bincount(slots % t.sets, weights=read_s, minlength=t.sets) * imb
        if select_s is not None:
            imb_sel = imb if resident is None else self._set_imbalance(k, resident)
            if t.sets == 1:
                busy += float(np.add.reduce(select_s)) * float(imb_sel[0])
            else:
                busy = busy + np.bincount(slots % t.sets, weights=select_s,
                                          minlength=t.sets) * imb_sel
        tt = t.with_refresh(float(np.max(busy)))  # >= any request's time: imb >= 1
        # partial results to HBM-PIM (PAMattention: none leave HBM-PIM itself) or per block
        # to the GPUs (without)
        x_s = 0.0
        if k > 0 or not self.pamattention:
            m = self.model
            pb = float(parts) * (partial_elements(m.n_heads, q_tokens, m.head_dim) * m.dtype_bytes)
            x_s, x_j = t.partials_out(pb, self.sparse)
            energy += x_j
        return tt, energy, x_s

    def step(
        self, reqs: np.ndarray, context: np.ndarray, q_tokens: int, reserve: bool = False,
        blocks: np.ndarray | None = None,
    ) -> KVStep:
        """Price one decode step's attention for requests ``reqs`` (ids) attending ``context``
        tokens with ``q_tokens`` query tokens each; update importance, mapping activity and
        placement (migrations). The blocks must have been reserved, or with ``reserve`` are
        reserved first (as :meth:`reserve` would, its link time in ``write_s``). ``blocks``:
        ``ceil(context / block_tokens)`` where the caller has it already. Times in s, energy
        in J."""
        nt = self.n_tiers
        self._run_mark = None
        if reqs.size == 0:
            self.steps += 1  # (the residency sums credit it at the tiers' next change)
            return KVStep(by_tier_s=(0.0,) * nt)
        if (self._merged or reserve) and self._summarise(reqs, context):
            self._held = None  # (the summary model's writes: recounted when next needed)
            return self._step_summary(reqs, context, q_tokens, reserve)
        write_s = 0.0
        if self._one_tier_ok and self._fast_one_tier:
            out = self._step_one_tier(reqs, context, q_tokens, reserve, blocks)
            if out is not None:
                return out
        if reserve:
            write_s, slots, have = self._reserve(reqs, context)
        self.steps += 1
        m = self.model
        L = m.n_layers
        tiers = self.tiers
        R = reqs.size
        cnt = np.empty((2, R), dtype=np.int64)  # per request: blocks read, blocks resident
        n = cnt[1]
        if reserve:
            n[:] = have
        else:
            slots = self.slot_of[reqs]
            self.nblk.take(slots, out=n, mode="wrap")
        n_l = n.tolist()
        C = max(n_l)
        nv = sum(n_l)
        empty_rows = not min(n_l) > 0  # a request without blocks (or without a slot yet)
        if empty_rows:
            slots = self._slots(reqs)
        if self._wcols != self._cols:
            self._build_recency()
        # gather whole rows (cheap, contiguous) unless the widest request is much wider
        wide = self._cols <= self._wide_factor * C
        width = self._cols if wide else C
        used = [k for k, t in enumerate(tiers) if t.used > 0]
        single = len(used) <= 1
        valid = None
        if empty_rows:
            valid = np.arange(width) < n[:, None]
        positive = self._positive_scores and not empty_rows  # the k-th best is resident
        self._drift(slots, n, nv)
        s = imp = None
        # the importance EMA is kept while the KV spans tiers (Algorithm 2's input); after steps
        # on one tier every block starts afresh at its next tracked step (I = S)
        track = self._need_imp and not single
        if self._need_imp and single:
            self._imp_stale = True
        if self.sparse or track:
            if wide:
                s = self._sal.take(slots, axis=0, mode="wrap")
                s *= self._recency_rows(n)
            else:
                s = self._sal[slots, :C]
                s *= self._recw[n, :C]
            if not self._sink_folded:
                s[:, 0] *= self.loc.sink_boost
            if valid is not None:
                s *= valid
        if track:
            assert s is not None
            # S: each request's scores normalised to sum 1 (the selection only ranks them)
            tot = np.add.reduce(s[:, :C] if wide else s, axis=1)
            if not positive:
                np.maximum(tot, _TINY32, out=tot)
            s /= tot[:, None]
            if self._imp_stale:
                self._imp.fill(0.0 if self._positive_scores else np.nan)
                self._imp_stale = False
            # I = lambda S + (1 - lambda) I; a block's first step: I = S
            imp = self._imp.take(slots, axis=0, mode="wrap") if wide else self._imp[slots, :C]
            fresh = imp == 0 if self._positive_scores else np.isnan(imp)
            u = s * self.lam
            imp *= 1.0 - self.lam
            imp += u
            np.copyto(imp, s, where=fresh)
            if wide:
                self._imp[slots] = imp
            else:
                self._imp[slots, :C] = imp
        bgs = self._bgx.take(slots, axis=0, mode="wrap") if wide else self._bgx[slots, :C]
        nread = cnt[0]
        if self.sparse:
            self._ktab.take(n, out=nread, mode="wrap")  # blocks each request reads (without ties)
            srt = s[:, :C].copy() if wide else s.copy()
            srt.sort(axis=1)
            thr = srt[self._ar[:R], srt.shape[1] - nread]  # each request's k-th best score
            sel = s >= thr[:, None]
            if not positive and not thr.min() > 0:  # a request without blocks (or scores 0)
                if valid is None:
                    valid = np.arange(width) < n[:, None]
                sel &= valid
            nsel = np.count_nonzero(sel)
            ties = nsel != sum(nread.tolist())  # a request reads more than its k
        else:
            if valid is None:
                valid = np.arange(width) < n[:, None]
            sel = valid
            nsel = nv
            nread[:] = n
            ties = False
        self.resident_blocks += float(nv)
        self.read_blocks += float(nsel)

        ctx = context if type(context) is np.ndarray else np.asarray(context, dtype=np.int64)
        self._ring = ring = (self._ring + 1) % self.window
        # every tier's bank-group load of this step's reads, by code; the activations the
        # greedy mapping balances add the selection pass's scan of every resident block
        # (and the window's sums: kept current)
        reads = np.bincount(bgs[sel], minlength=self._n_codes)
        resident = self._resident(slots, bgs) if self.sparse else None
        self._activate(ring, reads, resident)
        slowest = 0.0
        fetch_s = 0.0
        energy = 0.0
        comm_s = 0.0
        fetched_tokens = None
        tier_time = [0.0] * nt
        tier_x = [0.0] * nt
        tb = None if single else self._tier_of_code.take(bgs, mode="wrap")
        B = self.block_tokens
        merging = self.pamattention and self._hbm_ru > 0 and not single
        tiers_read = np.zeros(R, dtype=np.int64) if merging else None
        for k in used:
            t = tiers[k]
            if single:
                if ties:
                    np.add.reduce(sel, axis=1, out=nread)
                nr = nsel
                parts = R if positive else np.count_nonzero(nread)
            else:
                on_k = tb == k
                np.add.reduce(on_k if sel is valid else sel & on_k, axis=1, out=nread)
                cnt[1] = np.count_nonzero(on_k, axis=1)
                nr = int(nread.sum())
                parts = np.count_nonzero(nread)
            if not nr:
                continue
            if merging:  # the tiers each request reads from
                tiers_read += nread > 0
            if not self.pamattention:
                parts = nr
            if not t.compute:
                tok = np.minimum((nread if self.sparse else cnt[1]) * B, ctx)
                nb = float(tok.sum()) * m.kv_bytes_per_token / L  # one layer's K and V
                fetch_s = max(fetch_s, t.link_time(nb))
                energy += t.link_energy(nb)
                fetched_tokens = tok if fetched_tokens is None else fetched_tokens + tok
                continue
            tt, energy, x_s = self._price(k, cnt, parts, slots, reads, q_tokens, width * B,
                                          ctx, energy, resident)
            tier_time[k] = tt
            tier_x[k] = x_s
            slowest = max(slowest, tt + x_s)
        if fetched_tokens is not None and fetched_tokens.any():
            # offloaded KV computed on the first tier, after its fetch
            first = tiers[0]
            if tb is None:
                tb = self._tier_of_code.take(bgs, mode="wrap")
            tok0 = np.minimum((sel & (tb == 0)).sum(axis=1) * B, ctx) + fetched_tokens
            tab_t, tab_e = self._table(0, q_tokens, int(tok0.max()), False)
            per = tab_t[tok0]
            t0 = first.with_refresh(GroupModel.balanced_time(per, first.sets))
            energy += float(tab_e[tok0].sum())
            tier_time[0] = t0
            # the fetch overlaps the compute: attention is the compute, and only the part of
            # the fetch that outlasts it stalls the iteration (counted once, as communication)
            slowest = max(slowest, t0)
            comm_s += max(0.0, fetch_s - slowest)
        red_s = 0.0
        if merging:
            # PAMattention's inter-device reduction: a request whose blocks read lie on t >= 2
            # tiers merges its t partials (every element of each rescaled and summed once); on
            # one tier the intra-device reduction's result is final
            merged = int(tiers_read[tiers_read >= 2].sum())
            red_s = float(merged) * partial_elements(m.n_heads, q_tokens, m.head_dim) \
                / self._hbm_ru
        by_tier = [L * v for v in tier_time]
        for k, v in enumerate(by_tier):
            self._attn_by_tier[k] += v
        out = KVStep(write_s=write_s, attention_s=L * (slowest + red_s), attention_j=L * energy,
                     communication_s=L * comm_s, by_tier_s=tuple(by_tier),
                     partials_by_tier_s=tuple(L * v for v in tier_x), reduction_s=L * red_s,
                     fetch_s=L * fetch_s)
        if self.scheduling and nt > 1 and not single:
            assert tb is not None and imp is not None
            out.migration_s = self._rebalance(slots, tb, imp)
        return out

    def _one_tier_state(self, ctx: object) -> bool:
        """Whether the hierarchy is in the state the one-tier paths (:meth:`_step_one_tier`,
        :meth:`decode_run`) take: no block beyond the first tier, ``ctx`` (tokens) a numpy
        array, whole-row gathers, the attention sink folded, every score positive."""
        for o in self.tiers[1:]:
            if o.used:
                return False
        return (type(ctx) is np.ndarray and self._wcols == self._cols and self._sink_folded
                and self._positive_scores)

    def _step_one_tier(
        self, reqs: np.ndarray, ctx: np.ndarray, q_tokens: int, reserve: bool = True,
        need: np.ndarray | None = None,
    ) -> KVStep | None:
        """``step(reqs, ctx, q_tokens, reserve)`` in the common case, with fewer calls and the
        same results: every block on the first tier (and the new ones fit there), sparse
        reads, one replica set, at most one new block per request (decode; none without
        ``reserve``), every request holding blocks already, whole-row gathers. Returns None,
        having changed nothing, when the case does not apply."""
        if not self._one_tier_state(ctx):
            return None
        t = self.tiers[0]
        slots = self.slot_of[reqs]
        have = self.nblk.take(slots, mode="wrap")
        if not min(have.tolist()) > 0:
            return None
        B, shift = self.block_tokens, self._block_shift
        if need is None:
            need = (ctx + (B - 1)) >> shift
        grow = need - have
        gl = grow.tolist()
        if max(gl) > reserve:  # (without reserve, every block must be there already)
            return None
        # blocks held: a request may hold more than it needs
        n = need if reserve and min(gl) >= 0 else np.maximum(have, need)
        n_l = n.tolist()
        C = max(n_l)
        if self._cols < C or self._cols > self._wide_factor * C:
            return None
        total = gl.count(1) if reserve else 0
        if total > t.capacity_blocks - t.used:
            return None
        # ---- reserve (as _reserve)
        if total:
            idx = [i for i, g in enumerate(gl) if g > 0]
            rows, cols = slots.take(idx, mode="wrap"), have.take(idx, mode="wrap")
            self._bgx[rows, cols] = self._map(0, rows, cols)
            self._held = None  # (as _commit_run)
            self._use(0, total)
            self._sal[rows, cols] = self._draws.lognormal(total)
            self.nblk[rows] = cols + 1
        self.steps += 1
        if self._need_imp:
            self._imp_stale = True
        # ---- scores and the sparse selection (as step)
        R = len(n_l)
        nv = sum(n_l)
        self._drift(slots, n, nv)
        s = self._sal.take(slots, axis=0, mode="wrap")
        s *= self._recency_rows(n)
        bgs = self._bgx.take(slots, axis=0, mode="wrap")
        cnt = np.empty((2, R), dtype=np.int64)  # tokens read, tokens resident (ctx)
        nread = cnt[0]
        self._ktab.take(n, out=nread, mode="wrap")
        s = s[:, :C]  # (past the longest request every score is 0)
        srt = s.copy()
        srt.sort(axis=1)
        thr = srt[self._ar[:R], C - nread]
        sel = s >= thr[:, None]
        nsel = np.count_nonzero(sel)
        if nsel != sum(nread.tolist()):  # ties: a request reads more than its k
            np.add.reduce(sel, axis=1, out=nread)
        self.resident_blocks += float(nv)
        self.read_blocks += float(nsel)
        self._ring = ring = (self._ring + 1) % self.window
        reads = np.bincount(bgs[:, :C][sel], minlength=self._n_codes)
        res = np.bincount(bgs[:, :C].ravel(), minlength=self._n_codes)
        self._activate(ring, reads, res)
        # ---- price the first tier (as _price)
        np.left_shift(nread, shift, out=nread)
        np.minimum(nread, ctx, out=nread)
        tab = self._pair_table(0, q_tokens, self._cols * B)
        np.add(ctx, tab.shape[0] // 2, out=cnt[1])  # the selection pass over every token
        g = tab.take(cnt.ravel(), axis=0, mode="wrap")
        energy = float(np.add.reduce(g[:, 1]))
        # the attention waits on the bank groups of the blocks read, the selection pass on
        # those of every resident block (as _price)
        busy = float(np.add.reduce(g[:R, 0])) * self._imbalance0(reads)
        busy += float(np.add.reduce(g[R:, 0])) * self._imbalance0(res)
        tt = t.with_refresh(busy)
        m = self.model
        L = m.n_layers
        x_s = 0.0  # (PAMattention: the partials stay on the first tier, HBM-PIM)
        if not self.pamattention:
            x_s, x_j = t.partials_out(
                float(nsel) * (partial_elements(m.n_heads, q_tokens, m.head_dim)
                               * m.dtype_bytes), True)
            energy += x_j
        self._attn_by_tier[0] += L * tt  # (one tier: no inter-device reduction)
        rest = self._zero_tail
        return KVStep(attention_s=L * (tt + x_s), attention_j=L * energy,
                      by_tier_s=(L * tt, *rest), partials_by_tier_s=(L * x_s, *rest))

    # ------------------------------------------------------------------ runs of steps
    def decode_run(
        self, reqs: np.ndarray, ctx0: np.ndarray, q_tokens: int, k: int,
        last: np.ndarray | None = None,
    ) -> KVRun | None:
        """Up to ``k`` consecutive decode steps of the same requests priced at once: step
        ``j`` is ``step(reqs', ctx0' + j, q_tokens, reserve=True)`` (one token more per step,
        nobody admitted in between) taken by :meth:`_step_one_tier`, with the same random
        draws in the same order and the same per-step results, where ``reqs'`` are the
        requests still decoding: request ``i`` decodes up to step ``last[i]`` (counted from
        0; None: every step) and is released after it, as a finished request is between
        two steps. Nothing changes until :meth:`KVRun.commit` applies the run's first steps
        (it may apply fewer than were priced: an arrival cuts the run). The run is shorter
        than ``k`` where a step would leave the one-tier case (a spill, a wider request, the
        summary model) or where the locality model's buffered draws would be refilled.
        Returns None (nothing changed) when fewer than two steps qualify. Times in s, energy
        in J."""
        if not (self._one_tier_ok and self._fast_one_tier) or reqs.size == 0 or k < 2:
            return None
        if not self._one_tier_state(ctx0):
            return None
        t = self.tiers[0]
        B, shift = self.block_tokens, self._block_shift
        assert shift is not None
        if self.summary_columns is not None:  # step() takes the summary path past this
            if self._merged and self._has_merged.take(self.slot_of[reqs], mode="wrap").any():
                return None
            k = min(k, self._exact_max * B - int(ctx0.max()) + 1)
            if k < 2:
                return None
        slots = self.slot_of[reqs]
        have = self.nblk.take(slots, mode="wrap")
        if not min(have.tolist()) > 0:
            return None
        R = int(reqs.size)
        k = min(k, max(2, RUN_CELLS // (R * self._cols)))  # bounds the [step, request, block]
        steps_k = np.arange(k, dtype=np.int64)
        ctx = ctx0[None, :] + steps_k[:, None]  # [step, request]
        need = (ctx + (B - 1)) >> shift
        if int((need[0] - have).max()) > 1:
            return None
        n = np.maximum(need, have)  # blocks held at each step
        prev = np.empty_like(n)
        prev[0] = have
        prev[1:] = n[:-1]
        grow = n - prev  # 0 or 1: a new block this step
        # requests that finish inside the run: nothing (no blocks, no tokens) after their
        # last step; their blocks leave the tier between that step and the next
        live = None
        if last is not None and int(last.min()) < k - 1:
            live = steps_k[:, None] <= last[None, :]  # [step, request]
            n *= live
            grow *= live
            ctx *= live
        tl = np.add.reduce(grow, axis=1).tolist()  # new blocks per step
        freed = [0] * k  # blocks released before each step, summed
        if live is not None:
            gone = np.flatnonzero(last < k - 1)
            for j, b in zip((last[gone] + 1).tolist(), n[last[gone], gone].tolist(),
                            strict=True):
                freed[j] += b
            freed = list(accumulate(freed))
        # (a step whose longest request is much narrower than the widest so far goes to
        # step()'s general path, which gathers columns instead of rows: the same results)
        room, cols = t.capacity_blocks - t.used, self._cols
        for j, (c, w) in enumerate(zip(accumulate(tl), n.max(axis=1).tolist(), strict=True)):
            if c - freed[j] > room or w > cols:
                k = j
                break
        if k < 2:
            return None
        nv = np.add.reduce(n[:k], axis=1)
        nvl = nv.tolist()
        # ---- the draws: Binomial(blocks, drift) per step from the generator, then the
        # buffered log-normals (new blocks, then redrawn ones) and uniforms (redraws)
        loc, dr, rng = self.loc, self._draws, self.rng
        p = loc.drift_per_step
        state = states = None
        if p > 0:
            state = rng.bit_generator.state
            kd, states = _binomials(rng, nv, p)
        else:
            kd = [0] * k
        ln_left, u_left = dr._ln.size - dr._iln, dr._u.size - dr._iu
        ln_at, u_at = [], []  # each step's first log-normal and uniform (offsets)
        a = b = 0
        for j in range(k):
            ln_at.append(a)
            u_at.append(b)
            a += tl[j] + kd[j]
            b += 2 * kd[j]
            if a > ln_left or b > u_left:  # a buffer refill inside: the run stops before it
                if p > 0:
                    rng.bit_generator.state = state
                k = j
                if k < 2:
                    return None
                if p > 0:
                    kd, states = _binomials(rng, nv[:k], p)
                nv, nvl = nv[:k], nvl[:k]
                a, b = ln_at[k], u_at[k]
                ln_at, u_at = ln_at[:k], u_at[:k]
                break
        if k < n.shape[0]:  # the run stops early: every per-step array to its k steps
            ctx, n, prev, grow, tl = ctx[:k], n[:k], prev[:k], grow[:k], tl[:k]
            steps_k, freed = steps_k[:k], freed[:k]
            if live is not None:
                live = live[:k]
        ln_used, u_used = a, b
        LN = dr._ln[dr._iln: dr._iln + ln_used]
        U = dr._u[dr._iu: dr._iu + u_used]
        # ---- salience changes, step by step: new blocks, then redraws (as the steps draw
        # them); the saliences of step j are those of step j - 1 with step j's changes
        nj, nr = np.nonzero(grow)  # by step, then request (as _reserve's order)
        ncol = prev[nj, nr]
        Cf = int(n[-1].max()) if live is None else int(n.max())
        cur = self._sal[slots, :Cf]
        kda = np.array(kd)
        alt = _alternating(2 * k)
        # the log-normals, step after step: its new blocks', then its redraws'
        cnt = np.empty(2 * k, dtype=np.int64)
        cnt[0::2] = tl
        cnt[1::2] = kda
        is_new = alt.repeat(cnt)
        nval = LN[is_new]
        D = sum(kd)
        if D:
            # each redraw: its request (searchsorted over the blocks' running count, right
            # side: on whole numbers, the count of at most floor(x); the steps' counts laid
            # end to end), its block and its new salience. The uniforms, step after step:
            # the redraws' first uniforms, then their second ones
            dj = np.arange(k).repeat(kda)
            is_u1 = alt.repeat(kda.repeat(2))
            u1, u2 = U[is_u1], U[~is_u1]
            x = u1 * nv[dj]
            base_nv = np.cumsum(nv) - nv
            lined = np.cumsum(n.reshape(-1))  # (whole numbers: as row sums laid end to end)
            dr_r = (lined.searchsorted(np.floor(x).astype(np.int64) + base_nv[dj], "right")
                    - dj * R) % R
            dr_c = (u2 * n[dj, dr_r]).astype(np.intp)
            dr_v = LN[~is_new]
            # every change holds from its step until the next change of its cell (a new
            # block's cell changes only from its step on; the changes of a cell, new block
            # first, keep the steps' order)
            ch_j = np.concatenate((nj, dj))
            ch_cell = np.concatenate((nr * Cf + ncol, dr_r * Cf + dr_c))
            ch_v = np.concatenate((nval, dr_v))
        else:
            dr_r = dr_c = np.zeros(0, dtype=np.intp)
            dr_v = np.zeros(0)
            ch_j, ch_cell, ch_v = nj, nr * Cf + ncol, nval
        sal = np.empty((k, R, Cf), dtype=np.float32)
        sal[:] = cur
        if ch_j.size:
            o = np.argsort(ch_cell, kind="stable")
            cs, js = ch_cell[o], ch_j[o]
            ends = np.full(js.size, k, dtype=np.int64)
            same = cs[1:] == cs[:-1]
            ends[:-1][same] = js[1:][same]
            span = ends - js  # steps the change holds (0: overwritten in its own step)
            first = np.cumsum(span) - span
            at = js.repeat(span) + (np.arange(int(first[-1] + span[-1])) - first.repeat(span))
            sal.reshape(-1)[at * (R * Cf) + cs.repeat(span)] = ch_v[o].repeat(span)
        drifts = (dr_r, dr_c, dr_v)
        ndrift = kd
        # ---- scores and the sparse selection of every step (as _step_one_tier)
        s = sal
        s.reshape(k * R, Cf)[:] *= self._recency_rows(n.ravel())[:, :Cf]
        srt = s.copy()
        srt.sort(axis=2)
        kread = self._ktab.take(n, mode="wrap")
        kR = k * R
        thr = srt.reshape(kR * Cf).take(np.arange(Cf, (kR + 1) * Cf, Cf) - kread.ravel())
        if live is not None:  # a finished request reads nothing
            thr[~live.ravel()] = np.inf
            kread *= live
        sel = s >= thr.reshape(k, R, 1)
        # a request reads its k best blocks, more on ties (each reads at least its k: equal
        # totals mean no ties)
        hits = np.flatnonzero(sel)
        nread = kread if hits.size == int(kread.sum()) else np.add.reduce(sel, axis=2)
        nsel = np.add.reduce(nread, axis=1)
        # ---- bank groups (as _step_one_tier): each step's reads and resident blocks by
        # code. The blocks held before the run count in one bincount over all steps (a new
        # block's cell holds code 0 there, which no load reads); each new block adds its
        # code from its step on: 1 resident, and 1 read at the steps that select it. New
        # blocks are mapped step by step on the activation window before their step.
        off, nbg, ncodes = self._bg_off[0], t.n_bg, self._n_codes
        sl = slice(off, off + nbg)
        bgs0 = self._bgx[slots, :Cf]
        RC = R * Cf
        hit_j, hit_c = np.divmod(hits, RC)
        reads = np.bincount(bgs0.reshape(RC).take(hit_c) + hit_j * ncodes,
                            minlength=k * ncodes).reshape(k, ncodes)
        res = np.bincount(bgs0.ravel(), minlength=ncodes)
        if live is not None:  # a finished request's blocks held before the run leave
            gone = np.flatnonzero(last[:R] < k - 1)
            if gone.size:
                rm = np.bincount(((last[gone] + 1)[:, None] * ncodes + bgs0[gone]).ravel(),
                                 minlength=(k + 1) * ncodes).reshape(k + 1, ncodes)[:k]
                res = res - np.add.accumulate(rm, axis=0)
        nnew = nj.size
        codes = np.empty(nnew, dtype=np.int64)
        W = self.window
        ring0 = self._ring
        if nnew:
            read_new = sel[:, nr, ncol].T  # [new block, step]: the step reads it
            held = steps_k[None, :] >= nj[:, None]  # [new block, step]: it exists
            if live is not None:
                held &= steps_k[None, :] <= last[nr][:, None]
            if self.mapping == "round-robin" or nbg == 1:
                codes[:] = ncol % nbg + off
            else:
                # window sums (tier 0) before each step of the activations without the new
                # blocks: the window before the run, less the steps it drops, plus the run's
                act0 = reads[:, sl] + res[..., sl]
                if k <= W:  # every step's window holds all the run's steps before it
                    act0 -= self._act[(ring0 + 1 + steps_k) % W, sl]
                    base = np.empty((k, nbg), dtype=np.int64)
                    base[0] = self._act_sum[sl]
                    base[1:] = act0[:-1]
                    np.add.accumulate(base, axis=0, out=base)  # (whole numbers: any order)
                else:
                    # (running sums of whole numbers, in place: as np.cumsum)
                    cb = np.empty((k + 1, nbg), dtype=np.int64)
                    cb[0] = 0
                    cb[1:] = act0
                    np.add.accumulate(cb, axis=0, out=cb)
                    ce = np.empty((k + 1, nbg), dtype=np.int64)
                    ce[0] = 0
                    ce[1: W + 1] = self._act[(ring0 + 1 + steps_k[:W]) % W, sl]
                    np.add.accumulate(ce[: W + 1], axis=0, out=ce[: W + 1])
                    ce[W + 1:] = ce[W]
                    jlo = np.maximum(steps_k - W, 0)
                    base = self._act_sum[sl] - ce[:k] + cb[:k] - cb[jlo]
                # each new block's activations in the window before each step
                wc = np.zeros((nnew, k + 1), dtype=np.int64)
                w = held.astype(np.int64)
                w += read_new
                np.cumsum(w, axis=1, out=wc[:, 1:])
                wsum = wc[:, :k] if k <= W else wc[:, :k] - wc[:, np.maximum(steps_k - W, 0)]
                rel = codes  # bank groups of tier 0 (0 .. nbg - 1) until the end
                a = 0
                for j, g in enumerate(tl):
                    if not g:
                        continue
                    act = base[j]  # (row j serves step j only: the mapping may mark it)
                    if g == 1:
                        rel[a] = c = act.argmin()
                        if j + 1 < k:  # its activations join the later steps' windows
                            base[j + 1:, c] += wsum[a, j + 1:]
                        a += 1
                        continue
                    if g <= min(_SMALL_MAP, nbg):  # the stable order's first few
                        for i in range(a, a + g):
                            rel[i] = b = act.argmin()
                            act[b] = _TAKEN
                    else:
                        order = np.argsort(act, kind="stable")
                        rel[a: a + g] = order[:g] if g <= nbg else order[np.arange(g) % nbg]
                    if j + 1 < k:
                        if g <= nbg:  # (distinct bank groups)
                            base[j + 1:, rel[a: a + g]] += wsum[a: a + g, j + 1:].T
                        else:
                            np.add.at(base[j + 1:].T, rel[a: a + g], wsum[a: a + g, j + 1:])
                    a += g
                codes += off
            idx = steps_k[None, :] * ncodes + codes[:, None]
            reads += np.bincount(idx[read_new], minlength=k * ncodes).reshape(k, ncodes)
            res = res + np.bincount(idx[held], minlength=k * ncodes).reshape(k, ncodes)
        loads = np.empty((2, k, nbg), dtype=np.int64)
        loads[0] = reads[:, sl]
        loads[1] = res[..., sl]
        acts = reads + res
        acts[:, 0] = 0
        for lo, hi in self._offload_cols:
            acts[:, lo:hi] = 0
        # ---- price the first tier (as _step_one_tier, every step at once)
        tot = np.add.reduce(loads, axis=2)
        if tot.all():
            imb = loads.max(axis=2) / (tot / nbg)
        else:  # (1 without load)
            imb = np.divide(loads.max(axis=2), tot / nbg, out=np.ones((2, k)), where=tot > 0)
        tok = np.empty((k, 2 * R), dtype=np.int64)
        np.minimum(nread << shift, ctx, out=tok[:, :R])
        tab_s, tab_j = self._pair_columns(0, q_tokens, self._cols * B)
        np.add(ctx, tab_s.size // 2, out=tok[:, R:])
        # [step, (kind, request)]: times (s) and energies (J), each gathered contiguous
        energy = np.add.reduce(tab_j.take(tok, mode="wrap"), axis=1)
        busy = np.add.reduce(tab_s.take(tok[:, :R], mode="wrap"), axis=1) * imb[0]
        busy += np.add.reduce(tab_s.take(tok[:, R:], mode="wrap"), axis=1) * imb[1]
        m = self.model
        L = m.n_layers
        tt = _with_refresh_rows(t, busy)
        x_s = np.zeros(k)
        if not self.pamattention:
            pe = partial_elements(m.n_heads, q_tokens, m.head_dim) * m.dtype_bytes
            for j, ns in enumerate(nsel.tolist()):
                xs, xj = t.partials_out(float(ns) * pe, True)
                x_s[j] = xs
                energy[j] += xj
        used = [t.used + c - r for c, r in zip(accumulate(tl), freed, strict=True)]
        return KVRun(self, k, L * (tt + x_s), L * energy, L * tt, L * x_s, used,
                     _RunState(reqs, ctx0, slots, n, tl, nvl, nsel.tolist(), state,
                               [*ln_at, ln_used], [*u_at, u_used], (nval, *drifts), ndrift,
                               (nr, ncol, codes), acts, None if live is None else last,
                               states))

    def _commit_run(self, run: KVRun, m0: int, m1: int) -> None:
        """Apply steps ``m0`` to ``m1 - 1`` of ``run``, its steps before ``m0`` applied
        already (``m0`` 0: none, and with ``m1`` 0 nothing but the generator rewound)."""
        st = run.state
        rng = self.rng
        if st.rng_state is not None and (m0 or m1 < run.k):
            # the generator stands after all k binomials (m0 0) or after the first m0 (an
            # earlier commit of fewer than k); its states after k - 1 and after k were kept
            # (a run cut by an arrival commits k - 1 steps, then its step k - 1 is taken)
            if m1 >= run.k - 1 and st.rng_after is not None:
                rng.bit_generator.state = st.rng_after[m1 - run.k + 1]
            else:
                if not m0:
                    rng.bit_generator.state = st.rng_state
                if m1 > m0:  # (one call: the same draws, in order)
                    rng.binomial(np.asarray(st.nv[m0:m1]), self.loc.drift_per_step)
        if m1 <= m0:
            return
        dr = self._draws
        dr._iln += st.ln_at[m1] - st.ln_at[m0]
        dr._iu += st.u_at[m1] - st.u_at[m0]
        slots = st.slots
        # new blocks, then redraws, of these steps (a block is new before any redraw of it,
        # and the redraws keep their order: as the steps wrote them)
        a0, a1 = sum(st.total[:m0]), sum(st.total[:m1])
        nr, ncol, codes = st.new
        nval, dr_r, dr_c, dr_v = st.sal_changes
        self._sal[slots[nr[a0:a1]], ncol[a0:a1]] = nval[a0:a1]
        d0, d1 = sum(st.drifts[:m0]), sum(st.drifts[:m1])
        if d1 > d0:
            self._sal[slots[dr_r[d0:d1]], dr_c[d0:d1]] = dr_v[d0:d1]
        self._bgx[slots[nr[a0:a1]], ncol[a0:a1]] = codes[a0:a1]
        self._held = None  # (one-tier runs never read it: recounted if a general step does)
        gone = None  # requests that finish before step m1 - 1, in the order released
        freed = [0] * (m1 - m0)  # their blocks, by the step after which they leave
        if st.last is None or int(st.last.min()) >= m1 - 1:
            self.nblk[slots] = st.n[m1 - 1]
        else:
            on = np.flatnonzero(st.last >= m0)  # (those done before m0 are released)
            lastc = np.minimum(st.last[on], m1 - 1)
            self.nblk[slots[on]] = st.n[lastc, on]
            out = on[lastc < m1 - 1]
            if out.size:
                gone = out[np.argsort(st.last[out], kind="stable")]  # by step, then request
                for j, b in zip(st.last[gone].tolist(), self.nblk[slots[gone]].tolist(),
                                strict=True):
                    freed[j - m0] += b
        # the first tier's residency sums, as _use(0, new blocks) at each step that adds
        # some and _use(0, -blocks) after each step where requests finish
        s0 = self.steps
        t = self.tiers[0]
        used, since = t.used, self._used_since[0]
        usum, peak = self._used_sum[0], self._used_peak[0]
        for j, (g, f) in enumerate(zip(st.total[m0:m1], freed, strict=True)):
            if g:
                if s0 + j != since:
                    usum += used * (s0 + j - since)
                    if used > peak:
                        peak = used
                    since = s0 + j
                used += g
            if f:
                if s0 + j + 1 != since:
                    usum += used * (s0 + j + 1 - since)
                    if used > peak:
                        peak = used
                    since = s0 + j + 1
                used -= f
        if gone is not None:
            self.slot_of[st.reqs[gone]] = -1
            self._free(slots[gone])
        t.used, self._used_since[0] = used, since
        self._used_sum[0], self._used_peak[0] = usum, peak
        m = m1 - m0
        self.steps = s0 + m
        if self._need_imp:
            self._imp_stale = True
        # (whole numbers: one sum adds as the steps' adds)
        self.resident_blocks += float(sum(st.nv[m0:m1]))
        self.read_blocks += float(sum(st.nsel[m0:m1]))
        # the activation window after these steps (as m calls of _activate)
        W, ring0 = self.window, self._ring
        acts = st.acts[m0:m1]
        if m <= W:  # the m steps replace m rows of the window
            rows = (ring0 + 1 + np.arange(m)) % W
            self._act_sum += np.add.reduce(acts - self._act[rows], axis=0)
            self._act[rows] = acts
        else:
            lo = m - W
            self._act_sum[:] = np.add.reduce(acts[lo:], axis=0)
            self._act[(ring0 + 1 + np.arange(lo, m)) % W] = acts[lo:]
        self._ring = (ring0 + m) % W
        self._act_version += m
        acc = self._attn_by_tier
        for v in run.by_tier0_s[m0:m1].tolist():
            acc[0] += v

    def _rebalance(self, slots: np.ndarray, tb: np.ndarray, imp: np.ndarray) -> float:
        """Algorithm 2 over the stepping requests' blocks (``tb``: their tiers, ``imp``: their
        importance, ``[request, block]``); returns the migration time (s)."""
        valid = tb >= 0
        t = tb[valid].astype(np.int64)
        cap = max(64, int(MAX_SWAP_FRACTION * t.size))
        swaps = algorithm2(imp[valid], t, self.x, self.y, cap)
        if not swaps:
            return 0.0
        rows, cols = np.nonzero(valid)
        rows = slots[rows]
        link_s = 0.0
        for a, b in swaps:
            ra, ca, rb, cb = rows[a], cols[a], rows[b], cols[b]
            ta = self._tier_of_code[self._bgx[ra, ca]]
            tb_ = self._tier_of_code[self._bgx[rb, cb]]
            # the blocks trade tiers; each is mapped to a bank group of its new tier
            for k in np.unique(np.concatenate([ta, tb_])).tolist():
                ma, mb = tb_ == k, ta == k
                if ma.any():
                    self._rehold(ra[ma], ca[ma], self._map(k, ra[ma], ca[ma]))
                if mb.any():
                    self._rehold(rb[mb], cb[mb], self._map(k, rb[mb], cb[mb]))
            nbytes = 2.0 * a.size * self.block_bytes
            self.migrated_bytes += nbytes
            slower = self.tiers[int(max(ta.max(), tb_.max()))]
            bw = slower.link_bytes_per_s or self.tiers[0].link_bytes_per_s
            if bw <= 0:
                continue
            if self.migration == "cpu":
                bw /= CPU_MIGRATION_SLOWDOWN
            link_s += nbytes / bw
        return link_s

    # ------------------------------------------------------------------ the summary model
    def _summarise(self, reqs: np.ndarray, tokens: np.ndarray) -> bool:
        """Whether requests ``reqs`` holding ``tokens`` need the summary model's paths: one
        of them is summarised already, or would hold more than ``kv_exact_max_blocks``."""
        if self.summary_columns is None:
            return False
        if self._merged and self._has_merged.take(self.slot_of[reqs], mode="wrap").any():
            return True
        if type(tokens) is not np.ndarray:
            tokens = np.asarray(tokens)
        return bool(tokens.max() > self._exact_max * self.block_tokens)

    def _blocks_held(self, slots: np.ndarray, C: int) -> np.ndarray:
        """Blocks each of ``slots`` holds (its columns' weights summed)."""
        nc = self.nblk.take(slots, mode="wrap")
        if not self._merged:
            return nc.copy()
        valid = np.arange(C) < nc[:, None]
        return np.add.reduce(self._wt[slots, :C] * valid, axis=1)

    def _reserve_summary(
        self, reqs: np.ndarray, tokens: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """:meth:`_reserve` for the summary model: new blocks are appended as columns of one
        block (as the exact model's). A request not yet summarised grows one column per
        block up to ``kv_exact_max_blocks``; past that it merges its cold columns
        (:meth:`_coarsen`), and from then on it grows at most ``2 x summary_columns`` columns
        at a time and merges whenever it holds more than ``summary_columns``. When some
        request needs more than one round (a long prompt), the requests take their rounds
        one after the other, so that the tiers fill in the exact model's order (request by
        request). Returns (link time s, the requests' slots)."""
        S = self.summary_columns
        assert S is not None
        B = self.block_tokens
        slots = self._slots(reqs)
        tok = np.asarray(tokens, dtype=np.int64)
        need = (tok + (B - 1)) // B
        C = int(self.nblk[slots].max()) if slots.size else 0
        held = self._blocks_held(slots, max(C, 1))
        rem = np.maximum(need - held, 0)
        if not rem.size or int(rem.max()) <= 0:
            return 0.0, slots
        nc = self.nblk[slots]
        top = np.where(self._has_merged[slots], 2 * S, self._exact_max + 1)  # columns a round

        def settle(slot: int) -> None:
            limit = S if self._has_merged[slot] else self._exact_max
            if self.nblk[slot] > limit:
                self._coarsen(slot)

        if int((rem - (top - nc)).max()) <= 0:  # one round for all
            write_s = self._reserve(reqs, (nc + rem) * B, index=held - nc)[0]
            for slot in slots.tolist():
                settle(int(slot))
            return write_s, slots
        # the rounds map the blocks as one allocation would: each tier's greedy cycle goes
        # on where the previous round left it (the activity does not change in between)
        start = [np.zeros(t.sets, dtype=np.int64) for t in self.tiers]
        write_s = 0.0
        for i in np.flatnonzero(rem).tolist():
            r, slot, left = reqs[i: i + 1], int(slots[i]), int(rem[i])
            blocks = int(held[i])
            while left > 0:
                have = int(self.nblk[slot])
                cap = 2 * S if self._has_merged[slot] else self._exact_max + 1
                g = min(left, max(cap - have, 1))
                write_s += self._reserve(r, np.array([(have + g) * B]), start,
                                         np.array([blocks - have]))[0]
                left -= g
                blocks += g
                settle(slot)
        return write_s, slots

    def _coarsen(self, slot: int) -> None:
        """Merge cold columns of ``slot`` until it holds ``S - (S - tail) / 4`` columns.

        Column 0 (the attention sink) and the last ``tail`` columns (the recency boost's
        reach) are never merged. Among the rest, whose recency boost is negligible and whose
        order therefore does not matter, pairs of columns on the same tier merge, lightest
        pairs first: the merged column stands for both columns' blocks (weights summed) and
        keeps one of them as its sample (salience, importance, bank group), chosen with
        probability proportional to its weight, so that the weighted distribution of
        saliences over blocks stays an unbiased sample of the exact model's. Pairs are
        neighbours in salience on one tier, the coldest first: the blocks the sparse
        attention reads stay columns of their own (with their own bank groups) for as long
        as the columns allow (a call that must merge more pairs than there are merges them
        all). The merged blocks' bank groups are kept as a histogram per request
        (:meth:`_merged_bank_group`); those of single columns read at the request's last step
        (salience at or above its last threshold) join its read subset too (:meth:`_loads`)."""
        S = self.summary_columns
        assert S is not None
        F = self._tail_cols
        target = S - (S - F) // 4  # a quarter of the cold columns freed per call
        idx = self._idx
        if idx is not None and not self._has_merged[slot]:  # (columns were the blocks)
            nc = int(self.nblk[slot])
            idx[slot, :nc] = np.arange(nc)
        self._merged = True
        self._has_merged[slot] = True
        while True:
            nc = int(self.nblk[slot])
            lo, hi = 1, nc - F
            excess = nc - target
            if excess <= 0 or hi - lo < 2:
                return
            codes = self._bgx[slot, lo:hi]
            tiers = self._tier_of_code[codes]
            w = self._wt[slot, lo:hi]
            sal = self._sal[slot, lo:hi]
            order = np.lexsort((sal, tiers))
            ts = tiers[order]
            m = ts.size
            first = np.searchsorted(ts, ts, "left")
            i = np.arange(m - 1)
            cand = i[((i - first[:-1]) % 2 == 0) & (ts[1:] == ts[:-1])]
            if cand.size == 0:
                return
            # the coldest pairs (by the warmer of the two): as many as are in excess, and at
            # most the colder half, so that the warm columns stay single while colder ones
            # can merge again (the next pass pairs the merged columns anew)
            take = min(excess, max(1, cand.size // 2))
            if cand.size > take:
                warm = sal[order[cand + 1]]
                cand = np.sort(cand[np.argsort(warm, kind="stable")[:take]])
            a, b = order[cand], order[cand + 1]
            wa, wb = w[a], w[b]
            for side, ws in ((a, wa), (b, wb)):  # single blocks join the merged blocks
                one = side[ws == 1]
                np.add.at(self._mh[slot], self._hcol[codes[one]], 1)
                read = one[sal[one] >= self._thr[slot]]  # read at the request's last step
                np.add.at(self._mr[slot], self._hcol[codes[read]], 1)
            u = self._draws.uniform(a.size)
            keep_b = u * (wa + wb) >= wa  # the sample is b's with probability wb / (wa + wb)
            row = slice(lo, hi)
            for arr in (self._sal, self._imp, self._bgx) + (() if idx is None else (idx,)):
                seg = arr[slot, row]
                seg[a] = np.where(keep_b, seg[b], seg[a])
            w = w.copy()
            w[a] = wa + wb
            keep = np.ones(m, dtype=bool)
            keep[b] = False
            new_nc = 1 + int(keep.sum()) + F
            arrs = ((self._sal, 0), (self._imp, 0), (self._bgx, 0), (self._wt, 1))
            for arr, fill in arrs + (() if idx is None else ((idx, -1),)):
                seg = arr[slot, lo:hi] if arr is not self._wt else w
                kept = seg[keep]
                tail = arr[slot, hi:nc].copy()
                arr[slot, lo: lo + kept.size] = kept
                arr[slot, lo + kept.size: new_nc] = tail
                arr[slot, new_nc:nc] = fill
            self.nblk[slot] = new_nc

    def _drift_summary(self, slots: np.ndarray) -> None:
        """:meth:`_drift` on weighted columns: ``Binomial(blocks, drift_per_step)`` blocks,
        each drawn uniformly over the step's blocks, redraw their salience. A block of a
        merged column leaves it as a column of its own (new salience, the column's
        importance, the bank group of one of the request's merged blocks on its tier, drawn
        without replacement from the request's histogram), as in the exact model one block of
        the several redraws. At most ``summary_columns / 8`` blocks per request leave merged
        columns per step (a request of more than ``summary_columns / (8 x drift_per_step)``
        blocks loses the rest of its merged blocks' redraws), and a merged column keeps at
        least one block."""
        loc = self.loc
        if not (loc.drift_per_step > 0 and loc.salience_sigma > 0):
            return
        nc = self.nblk.take(slots, mode="wrap")
        C = max(int(nc.max()), 1)
        wt = (self._wt[slots, :C] * (np.arange(C) < nc[:, None])).ravel()
        cum = np.cumsum(wt)
        nv = int(cum[-1])
        k = self.rng.binomial(nv, loc.drift_per_step) if nv else 0
        if not k:
            return
        u = self._draws.uniform(k)
        flat = np.minimum(cum.searchsorted((u * nv).astype(np.int64), "right"), wt.size - 1)
        new = self._draws.lognormal(k).copy()
        one = wt[flat] == 1
        r, c = np.divmod(flat[one], C)
        self._sal[slots[r], c] = new[one]
        # on one tier (no Algorithm 2, whose importances every redraw moves), a merged block
        # redrawn far below its request's last threshold stays merged (cold before, cold
        # after: which cold block it is does not change what is read)
        if sum(t.used > 0 for t in self.tiers) <= 1:
            one |= new < _COLD_MARGIN * self._thr[slots[flat // C]]
        if one.all():
            return
        # blocks leaving merged columns: per column at most its weight - 1, per request at
        # most summary_columns / 8
        o = np.argsort(flat[~one], kind="stable")
        fm, nm = flat[~one][o], new[~one][o]
        cols, first, hits = np.unique(fm, return_index=True, return_counts=True)
        take = np.minimum(hits, wt[cols] - 1)
        rr, cc = np.divmod(cols, C)
        cap = max(1, (self.summary_columns or 0) // 8)
        csum = np.cumsum(take)
        row_start = np.searchsorted(rr, rr, "left")
        taken_before = csum - take - (csum - take)[row_start]  # in the row, before this one
        take = np.clip(cap - taken_before, 0, take)
        for i in np.unique(rr[take > 0]).tolist():
            mine = np.flatnonzero((rr == i) & (take > 0))
            t = take[mine]
            src = np.repeat(first[mine], t) + np.arange(int(t.sum())) - np.repeat(
                np.cumsum(t) - t, t)
            self._split_blocks(int(slots[i]), cc[mine], t, nm[src])
        over = (self.nblk[slots] > (self.summary_columns or 0)) & self._has_merged[slots]
        for i in np.flatnonzero(over).tolist():
            self._coarsen(int(slots[i]))

    def _split_blocks(
        self, row: int, cols: np.ndarray, n_out: np.ndarray, sals: np.ndarray
    ) -> None:
        """``n_out[i]`` blocks leave merged column ``cols[i]`` of slot ``row``, each as a
        column of one block with the next salience of ``sals``, the column's importance and
        a bank group drawn (without replacement, per tier at once) from the request's
        histogram on the column's tier (from its merged blocks read where the column was read
        at the request's last step: :meth:`_merged_bank_group`); the new columns go in at
        position 1, among the cold ones (whose order does not matter). A merged column left
        with one block takes its own bank group from the histogram too."""
        nc = int(self.nblk[row])
        total = int(n_out.sum())
        if nc + total > self._cols:
            self._grow(nc + total)
            self._build_recency()
        col_codes = self._bgx[row, cols]
        col_read = self._sal[row, cols] >= self._thr[row]  # read at the request's last step
        group = 2 * self._tier_of_code[col_codes].astype(np.int64) + col_read
        tier = np.repeat(group, n_out)
        codes = np.empty(total, dtype=np.int64)
        for g in np.unique(tier).tolist():
            on = np.flatnonzero(tier == g)
            drawn = self._merged_bank_group(row, int(col_codes[group == g][0]), on.size,
                                            bool(g % 2))
            codes[on] = self.rng.permutation(drawn) if on.size > 1 else drawn
        src = np.repeat(cols, n_out)
        self._wt[row, cols] -= n_out
        new_imp = self._imp[row, src]
        moves = [(self._sal, sals.astype(np.float32)), (self._imp, new_imp),
                 (self._bgx, codes), (self._wt, np.ones(total, dtype=np.int64))]
        if self._idx is not None:  # (which merged blocks they are is not kept)
            moves.append((self._idx, np.full(total, -1, dtype=np.int32)))
        for arr, vals in moves:
            rest = arr[row, 1:nc].copy()
            arr[row, 1: 1 + total] = vals
            arr[row, 1 + total: nc + total] = rest
        self.nblk[row] = nc + total
        left = self._wt[row, cols + total] == 1
        for col, was_read in zip((cols[left] + total).tolist(), col_read[left].tolist(),
                                 strict=True):
            last = self._merged_bank_group(row, int(self._bgx[row, col]), 1, was_read)
            self._bgx[row, col] = int(last[0])
            if self._idx is not None:  # (which of the merged blocks is left is not kept)
                self._idx[row, col] = -1

    def _merged_bank_group(
        self, row: int, code: int, n: int, read: bool, u: float | None = None
    ) -> np.ndarray:
        """Codes of ``n`` blocks that leave the merged blocks of slot ``row`` on ``code``'s
        tier, drawn without replacement from the request's histogram (by ``u`` when one
        block), and taken off it. ``read``: the blocks are of a column the request read at
        its last step, drawn first from its merged blocks read (``_mr``, which they leave);
        else first from the others."""
        k = int(self._tier_of_code[code])
        lo, hi = self._hoff[k], self._hoff[k + 1]
        h = self._mh[row, lo:hi]
        r = self._mr[row, lo:hi]
        base = int(self._set_base[code])
        tot = int(h.sum())
        if tot <= 0:  # (not reached: the histogram holds every merged block)
            return np.full(n, code, dtype=np.int64)
        nr = int(r.sum())
        if n == 1:
            x = float(self._draws.uniform(1)[0]) if u is None else u
            from_read = nr > 0 if read else nr == tot
            pool = r if from_read else h - r
            j = int(np.searchsorted(np.cumsum(pool), int(x * (nr if from_read else tot - nr)),
                                    "right"))
            h[j] -= 1
            if from_read:
                r[j] -= 1
            return np.array([base + j], dtype=np.int64)
        n = min(n, tot)
        first, other = (r.copy(), h - r) if read else (h - r, r.copy())
        m = min(n, nr if read else tot - nr)
        a = self.rng.multivariate_hypergeometric(first, m) if m else np.zeros_like(h)
        b = self.rng.multivariate_hypergeometric(other, n - m) if n > m else np.zeros_like(h)
        r -= a if read else b
        take = a + b
        h -= take
        return base + np.repeat(np.arange(h.size), take)

    def _resident_loads(self, slots: np.ndarray, bgs: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Resident blocks of the step's requests by bank-group code: single columns at
        their own, merged blocks by the requests' histograms (``wt``: weights, 0 past a
        request's columns)."""
        n = self._n_codes
        res = np.bincount(bgs[wt == 1], minlength=n)
        res[0] = 0
        merged = np.flatnonzero(self._has_merged[slots])
        for k, t in enumerate(self.tiers):
            if not merged.size:
                break
            base = self._bg_off[k] + (slots[merged] % t.sets) * t.n_bg
            h = self._mh[slots[merged], self._hoff[k]: self._hoff[k + 1]]
            idx = base[:, None] + np.arange(t.n_bg)
            res += np.bincount(idx.ravel(), weights=h.ravel(), minlength=n).astype(np.int64)
        return res

    def _loads(self, slots: np.ndarray, bgs: np.ndarray, selw: np.ndarray) -> np.ndarray:
        """Blocks read per bank-group code this step: a column of one block loads its bank
        group; of a request's merged blocks on a tier, the step reads a subset that persists
        from step to step (``_mr``, by bank group), as the exact model reads the same blocks,
        on the same bank groups, step after step (and its greedy mapping balances new blocks
        against them). Merged blocks keep their status as they move, split off or merge
        (:meth:`_merged_bank_group`); when the blocks a step reads from merged columns differ
        in number from the subset, it gains or loses the difference, drawn per bank group
        (each count thinned binomially) from the merged blocks not read, or from those
        read."""
        n = self._n_codes
        wt = self._wt[slots, : bgs.shape[1]]
        single = (selw > 0) & (wt == 1)
        act = np.bincount(bgs[single], minlength=n)
        rows = np.flatnonzero(self._has_merged[slots])
        if not rows.size:
            return act
        sl = slots[rows]
        multi = selw[rows] * (wt[rows] > 1)  # blocks read from merged columns
        tb = self._tier_of_code.take(bgs[rows], mode="wrap")
        for k, t in enumerate(self.tiers):
            if not t.used:
                continue
            lo, hi = self._hoff[k], self._hoff[k + 1]
            h = self._mh[sl, lo:hi]
            cur = self._mr[sl, lo:hi]  # (<= h)
            want = np.minimum(np.add.reduce(multi * (tb == k), axis=1), h.sum(axis=1))
            d = want - cur.sum(axis=1)
            if d.any():
                up, down = d > 0, d < 0
                if up.any():
                    free = h[up] - cur[up]
                    p = d[up] / np.maximum(free.sum(axis=1), 1)
                    cur[up] += self.rng.binomial(free, np.minimum(p, 1.0)[:, None])
                if down.any():
                    p = -d[down] / np.maximum(cur[down].sum(axis=1), 1)
                    cur[down] -= self.rng.binomial(cur[down], np.minimum(p, 1.0)[:, None])
                self._mr[sl, lo:hi] = cur
            if not want.any():
                continue
            base = self._bg_off[k] + (sl % t.sets) * t.n_bg
            idx = base[:, None] + np.arange(t.n_bg)
            act += np.bincount(idx.ravel(), weights=cur.ravel(), minlength=n).astype(np.int64)
        return act

    def _step_summary(
        self, reqs: np.ndarray, context: np.ndarray, q_tokens: int, reserve: bool
    ) -> KVStep:
        """:meth:`step` on the summary model's weighted columns: the same rules, with each
        column counted as the blocks it stands for (selection by weight, reads and residency
        per tier, bank-group loads, the importance normalisation, Algorithm 2). Per-step cost
        grows with the columns held (at most about twice ``summary_columns`` per request),
        not with the context."""
        nt = self.n_tiers
        write_s = 0.0
        if reserve:
            write_s, slots = self._reserve_summary(reqs, context)
        else:
            slots = self._slots(reqs)
        self.steps += 1
        m = self.model
        L = m.n_layers
        tiers = self.tiers
        R = reqs.size
        self._drift_summary(slots)
        nc = self.nblk.take(slots, mode="wrap")
        C = max(int(nc.max()), 1)
        if self._wcols != self._cols:
            self._build_recency()
        valid = np.arange(C) < nc[:, None]
        wt = self._wt[slots, :C] * valid
        nb = np.add.reduce(wt, axis=1)  # blocks each request holds
        used = [k for k, t in enumerate(tiers) if t.used > 0]
        single = len(used) <= 1
        s = self._sal[slots, :C] * self._recw[nc, :C]
        if not self._sink_folded:
            s[:, 0] *= self.loc.sink_boost
        s *= valid
        track = self._need_imp and not single
        if self._need_imp and single:
            self._imp_stale = True
        if track:
            tot = np.maximum(np.add.reduce(s * wt, axis=1), _TINY32)
            sn = s / tot[:, None]
            if self._imp_stale:
                self._imp.fill(0.0 if self._positive_scores else np.nan)
                self._imp_stale = False
            imp = self._imp[slots, :C]
            fresh = imp == 0 if self._positive_scores else np.isnan(imp)
            imp = imp * (1.0 - self.lam) + sn * self.lam
            np.copyto(imp, sn, where=fresh)
            imp *= valid
            self._imp[slots, :C] = imp
        bgs = self._bgx[slots, :C]
        if self.sparse:
            k = np.maximum(np.ceil(nb / self.ratio).astype(np.int64), 1)
            order = np.argsort(-s, axis=1)
            ss = np.take_along_axis(s, order, axis=1)
            cw = np.cumsum(np.take_along_axis(wt, order, axis=1), axis=1)
            ar = np.arange(R)
            pos = np.minimum(np.add.reduce(cw < k[:, None], axis=1), C - 1)
            thr = ss[ar, pos]
            self._thr[slots] = thr
            sel = (s >= thr[:, None]) & valid
            kread = np.minimum(k, nb)
            selw = wt * sel
            # the column at the threshold gives only the blocks still needed (a merged
            # column stands for blocks of several scores: its best ones are read)
            edge = order[ar, pos]
            before = cw[ar, pos] - wt[ar, edge]
            selw[ar, edge] = np.where(sel[ar, edge], np.maximum(kread - before, 0), 0)
        else:
            sel = valid
            kread = nb
            selw = wt * sel
        self.resident_blocks += float(nb.sum())
        self.read_blocks += float(kread.sum())
        ctx = np.asarray(context, dtype=np.int64)
        self._ring = ring = (self._ring + 1) % self.window
        reads = self._loads(slots, bgs, selw)
        resident = self._resident_loads(slots, bgs, wt) if self.sparse else None
        self._activate(ring, reads, resident)
        slowest = fetch_s = energy = comm_s = 0.0
        fetched_tokens = None
        tier_time = [0.0] * nt
        tier_x = [0.0] * nt
        tb = self._tier_of_code.take(bgs, mode="wrap")
        B = self.block_tokens
        merging = self.pamattention and self._hbm_ru > 0 and not single
        tiers_read = np.zeros(R, dtype=np.int64)
        cnt = np.empty((2, R), dtype=np.int64)
        read_on = {}
        for k in used:
            t = tiers[k]
            on_k = tb == k
            cnt[0] = np.add.reduce(selw * on_k, axis=1)  # blocks read on tier k
            cnt[1] = np.add.reduce(wt * on_k, axis=1)
            read_on[k] = cnt[0].copy()
            nr = int(cnt[0].sum())
            if not nr:
                continue
            tiers_read += cnt[0] > 0
            parts = np.count_nonzero(cnt[0]) if self.pamattention else nr
            if not t.compute:
                tok = np.minimum((cnt[0] if self.sparse else cnt[1]) * B, ctx)
                nbytes = float(tok.sum()) * m.kv_bytes_per_token / L
                fetch_s = max(fetch_s, t.link_time(nbytes))
                energy += t.link_energy(nbytes)
                fetched_tokens = tok if fetched_tokens is None else fetched_tokens + tok
                continue
            tt, energy, x_s = self._price(k, cnt, parts, slots, reads, q_tokens,
                                          int(nb.max()) * B, ctx, energy, resident)
            tier_time[k] = tt
            tier_x[k] = x_s
            slowest = max(slowest, tt + x_s)
        if fetched_tokens is not None and fetched_tokens.any():
            first = tiers[0]
            on0 = read_on.get(0, np.zeros(R, dtype=np.int64))
            tok0 = np.minimum(on0 * B, ctx) + fetched_tokens
            tab_t, tab_e = self._table(0, q_tokens, int(tok0.max()), False)
            t0 = first.with_refresh(GroupModel.balanced_time(tab_t[tok0], first.sets))
            energy += float(tab_e[tok0].sum())
            tier_time[0] = t0
            slowest = max(slowest, t0)
            comm_s += max(0.0, fetch_s - slowest)
        red_s = 0.0
        if merging:
            merged = int(tiers_read[tiers_read >= 2].sum())
            red_s = float(merged) * partial_elements(m.n_heads, q_tokens, m.head_dim) \
                / self._hbm_ru
        by_tier = [L * v for v in tier_time]
        for k, v in enumerate(by_tier):
            self._attn_by_tier[k] += v
        out = KVStep(write_s=write_s, attention_s=L * (slowest + red_s), attention_j=L * energy,
                     communication_s=L * comm_s, by_tier_s=tuple(by_tier),
                     partials_by_tier_s=tuple(L * v for v in tier_x), reduction_s=L * red_s,
                     fetch_s=L * fetch_s)
        if self.scheduling and nt > 1 and not single:
            out.migration_s = self._rebalance_summary(slots)
        return out

    def _rebalance_summary(self, slots: np.ndarray) -> float:
        """Algorithm 2 over the stepping requests' weighted columns, one stage after the other
        (:func:`~pimserve.policies.kv_placement.algorithm2_stage`); a column of which only
        some blocks move splits in two. Returns the migration time (s)."""
        link_s = 0.0
        for stage in ("a", "b"):
            C = max(int(self.nblk[slots].max()), 1)
            bgs = self._bgx[slots, :C]
            tb = self._tier_of_code[bgs]
            valid = tb >= 0
            rows, cols = np.nonzero(valid)
            rows = slots[rows]
            w = self._wt[slots, :C][valid]
            cap = max(64, int(MAX_SWAP_FRACTION * int(w.sum())))
            fa, fb, fast = algorithm2_stage(self._imp[slots, :C][valid], tb[valid].astype(
                np.int64), w, self.x, self.y, cap, stage)
            if not fa.size:
                continue
            slow = 2 if stage == "a" else 1
            splits = []
            for e, new_tier in ((fa, slow), (fb, fast)):
                u, moved = np.unique(e, return_counts=True)
                # every moving block mapped at once, as the exact model maps a step's swaps
                br = np.repeat(rows[u], moved)
                at = np.arange(br.size)
                if self.mapping == "round-robin":
                    # a column of one block of known index maps by it (as the exact model);
                    # blocks of merged columns take a uniformly drawn bank group
                    at = (self._draws.uniform(br.size) * 2**31).astype(np.int64)
                    if self._idx is not None:
                        ix = np.repeat(self._idx[rows[u], cols[u]], moved)
                        one = (np.repeat(w[u], moved) == 1) & (ix >= 0)
                        at = np.where(one, ix, at)
                codes = np.asarray(self._map(new_tier, br, at)).ravel()
                if codes.size < br.size:
                    codes = np.resize(codes, br.size)
                whole = (moved == w[u]) & (w[u] == 1)
                uw = u[whole]
                first = np.cumsum(moved) - moved
                if uw.size:
                    self._bgx[rows[uw], cols[uw]] = codes[first[whole]]
                for j in np.flatnonzero(~whole).tolist():
                    i, n_moved = int(u[j]), int(moved[j])
                    splits.append((int(rows[i]), int(cols[i]), n_moved,
                                   codes[first[j]: first[j] + n_moved]))
            shift: dict[int, int] = {}  # columns inserted per row so far (each shifts it)
            for row, col, n_moved, new_codes in splits:
                inserts = n_moved < int(self._wt[row, col + shift.get(row, 0)])
                self._move_merged(row, col + shift.get(row, 0), new_codes)
                if inserts:
                    shift[row] = shift.get(row, 0) + 1
            nbytes = 2.0 * fa.size * self.block_bytes
            self.migrated_bytes += nbytes
            bw = self.tiers[slow].link_bytes_per_s or self.tiers[0].link_bytes_per_s
            if bw <= 0:
                continue
            if self.migration == "cpu":
                bw /= CPU_MIGRATION_SLOWDOWN
            link_s += nbytes / bw
        return link_s

    def _move_merged(self, row: int, col: int, new: np.ndarray) -> None:
        """Blocks of merged column ``col`` of slot ``row`` move to the bank-group codes
        ``new`` (another tier's, one per block, from the mapping): their bank groups leave
        the request's histogram on the old tier (several that stay merged on the new one
        join its histogram there); all of the column moves in place, part of it splits
        off."""
        old = int(self._bgx[row, col])
        w = int(self._wt[row, col])
        n_moved = int(new.size)
        read = bool(self._sal[row, col] >= self._thr[row])  # at the request's last step
        self._merged_bank_group(row, old, n_moved, read)
        if n_moved > 1:
            np.add.at(self._mh[row], self._hcol[new], 1)
            if read:  # read on their new tier too (the column's score does not change)
                np.add.at(self._mr[row], self._hcol[new], 1)
        if n_moved == w:
            self._bgx[row, col] = int(new[0])
        else:
            self._split(row, col, n_moved, int(new[0]))

    def _split(
        self, row: int, col: int, n_moved: int, code: int, sal: float | None = None
    ) -> None:
        """``n_moved`` blocks of column ``col`` of slot ``row`` leave it as a new column at
        position 1, among the cold columns: same importance, bank-group code ``code``, the
        column's salience or ``sal``; the others stay."""
        nc = int(self.nblk[row])
        if nc + 1 > self._cols:
            self._grow(nc + 1)
            self._build_recency()
        idx = self._idx
        for arr in (self._sal, self._imp, self._bgx, self._wt) + (() if idx is None else (idx,)):
            arr[row, 2: nc + 1] = arr[row, 1:nc].copy()
        col += 1 if col >= 1 else 0
        self._sal[row, 1] = self._sal[row, col] if sal is None else sal
        self._imp[row, 1] = self._imp[row, col]
        self._wt[row, 1] = n_moved
        self._wt[row, col] -= n_moved
        self._bgx[row, 1] = code
        if idx is not None:
            idx[row, 1] = -1  # (blocks split off merged ones)
        self.nblk[row] = nc + 1
        if self._wt[row, col] == 1:  # the last block of a merged column: its own bank group
            last = self._merged_bank_group(row, int(self._bgx[row, col]), 1,
                                           bool(self._sal[row, col] >= self._thr[row]),
                                           float(self._draws.uniform(1)[0]))
            self._bgx[row, col] = int(last[0])
            if idx is not None:
                idx[row, col] = -1

    # ------------------------------------------------------------------ results
    def summary(self) -> dict:
        """Result fields: KV bytes by tier (mean and peak), attention time by tier, migrated
        bytes, the fraction of resident blocks the sparse attention read."""
        labels = [t.label for t in self.tiers]
        mean = self.used_block_steps / max(self.steps, 1) * self.block_bytes
        return {
            "kv_bytes_by_tier": dict(zip(labels, mean.tolist(), strict=True)),
            "kv_peak_bytes_by_tier": dict(
                zip(labels, (self.peak_used_blocks * self.block_bytes).tolist(), strict=True)
            ),
            "attention_time_by_tier_s": dict(
                zip(labels, self.attention_by_tier_s.tolist(), strict=True)
            ),
            "migrated_bytes": self.migrated_bytes,
            "sparse_read_fraction": (
                self.read_blocks / self.resident_blocks if self.resident_blocks else 1.0
            ),
            "kv_policy": {
                "placement": self.policy.name, "sparse_ratio": self.ratio,
                "mapping": self.mapping, "pamattention": self.pamattention,
                "scheduling": self.scheduling, "x": self.x, "y": self.y,
                "migration": self.migration, "model": self.cfg.kv_model,
                "summary_columns": self.summary_columns, "merged": self._merged,
            },
        }


@dataclass
class _RunState:
    """What :meth:`KVHierarchy._commit_run` applies: the run's slots, blocks held per step
    ``[step, request]``, new blocks per step, blocks and blocks read per step, the
    generator's state before the run's binomials, the log-normals and uniforms used before
    each step (and after the last), the salience changes (new blocks' values, then the
    redraws' requests, blocks and values, in order), redraws per step, the new blocks
    ``(request, block, bank-group code)`` in order and each step's bank-group
    activations ``[step, code]``, and each request's last step (None: it decodes at every
    step); ``reqs`` and ``ctx0`` are the run's requests and their contexts at its first
    step (tokens)."""

    reqs: np.ndarray
    ctx0: np.ndarray
    slots: np.ndarray
    n: np.ndarray
    total: list[int]
    nv: list[int]
    nsel: list[int]
    rng_state: dict | None
    ln_at: list[int]
    u_at: list[int]
    sal_changes: tuple[np.ndarray, ...]
    drifts: list[int]
    new: tuple[np.ndarray, ...]
    acts: np.ndarray
    last: np.ndarray | None
    rng_after: tuple[dict, dict] | None = None


@dataclass
class KVRun:
    """``k`` decode steps priced by :meth:`KVHierarchy.decode_run`, per step (arrays of
    ``k``): attention (s, all layers) and its energy (J), the first tier's local attention
    (s, all layers), its partial results' transfer (s, all layers), and the first tier's
    blocks resident after each step's reservation. :meth:`commit` applies them."""

    kvh: KVHierarchy
    k: int
    attention_s: np.ndarray
    attention_j: np.ndarray
    by_tier0_s: np.ndarray
    partials0_s: np.ndarray
    used: list[int]
    state: _RunState
    applied: int | None = None  # steps applied (None: not committed yet)

    def commit(self, m: int) -> None:
        """Apply the first ``m`` (0 to ``k``) steps to the hierarchy, as ``m`` calls of
        :meth:`KVHierarchy.step` would; with ``m`` 0 nothing changes."""
        if not 0 <= m <= self.k or self.applied is not None:
            raise ValueError(f"a run of {self.k} steps cannot apply {m} "
                             f"(applied: {self.applied})")
        self.kvh._commit_run(self, 0, m)
        self.applied = m
        self.kvh._run_mark = (id(self), m)  # (any other step or reservation clears it)

    def live(self, j: int) -> np.ndarray:
        """Which of the run's requests decode at step ``j`` (bool per request)."""
        last = self.state.last
        return np.ones(self.state.reqs.size, dtype=bool) if last is None else last >= j

    def take_step(self, reqs: np.ndarray, context: np.ndarray) -> KVStep | None:
        """Step ``j`` of the run, the one after the steps committed, as the next call of
        ``step(reqs, context, 1, reserve=True)`` would price and apply it, where that
        call is that step (the same requests, contexts and hierarchy state as the run
        assumed: nothing else has touched the hierarchy but the release of the requests
        that finished at step ``j - 1``); None, having changed nothing, where it is not."""
        j, kvh = self.applied, self.kvh
        if j is None or j >= self.k or kvh._run_mark != (id(self), j):
            return None
        st = self.state
        live = self.live(j)
        mine = st.reqs[live]
        if not (np.array_equal(mine, reqs) and np.array_equal(context, st.ctx0[live] + j)):
            return None
        kvh._commit_run(self, j, j + 1)
        self.applied = j + 1
        kvh._run_mark = None
        rest = kvh._zero_tail
        return KVStep(attention_s=float(self.attention_s[j]),
                      attention_j=float(self.attention_j[j]),
                      by_tier_s=(float(self.by_tier0_s[j]), *rest),
                      partials_by_tier_s=(float(self.partials0_s[j]), *rest))
