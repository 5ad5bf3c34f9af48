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
   ``I = lambda S + (1 - lambda) I`` (PAM eq. 7);
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
  inter-device reduction runs on HBM-PIM's reduction units;
- without it (fixed FlashDecoding-style tiling), every read block's partial leaves its device
  and is merged on the GPU: ``blocks x heads x TLP x (head_dim + 2)`` values per tier over the
  tier's link.

A tier with ``compute: false`` (offloading) computes nothing: its blocks are fetched over its
link to the first tier (the GPU) each step, and the GPU's attention waits for the fetch
(prefetching overlaps the two: ``max(fetch, compute)``, DeepSpeed-Inference style).

New KV written to tiers other than the first moves over their links (prefill and decode).
Migrations go over the slower tier's link, through PAM's interface or through the CPU (PAM 6.2:
the interface is more than 20x faster; the CPU path is priced at 1/20 of the link bandwidth);
they run on the links while the iteration computes, so a step takes
``max(iteration, migration)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pimserve.engine.config import RunConfig
from pimserve.engine.system import BuiltSystem
from pimserve.engine.tables import AttentionTables
from pimserve.errors import ConfigurationError
from pimserve.hardware.group import GroupModel
from pimserve.hardware.pim import PIMModel
from pimserve.hardware.ssd import SSDPIMModel
from pimserve.policies.kv_placement import KV_PLACEMENT, KVPlacement, algorithm2
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


@dataclass
class Tier:
    """One tier of the hierarchy, ready to price."""

    label: str
    group: GroupModel
    capacity_blocks: int
    compute: bool
    n_bg: int  # bank groups (or SSD channels) per device
    ways: int
    sets: int
    links: int
    used: int = 0

    @property
    def link_bytes_per_s(self) -> float:
        link = self.group.link
        return 0.0 if link is None else link.bytes_per_s * self.links

    def link_time(self, nbytes: float) -> float:
        link = self.group.link
        if link is None or nbytes <= 0:
            return 0.0
        return link.latency_s + nbytes / self.link_bytes_per_s

    def link_energy(self, nbytes: float) -> float:
        link = self.group.link
        return 0.0 if link is None else nbytes * 8 * link.spec.energy_pj_per_bit * 1e-12


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


@dataclass
class KVStep:
    """One decode step's attention and KV-movement cost, all layers, with its breakdown."""

    attention_s: float = 0.0
    attention_j: float = 0.0
    communication_s: float = 0.0
    migration_s: float = 0.0
    by_tier_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


class KVHierarchy:
    """Per-block KV state of the running requests on a system's tiers, and its pricing."""

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
            ways, sets = gm.attention_sets(model.n_kv_heads)
            self.tiers.append(Tier(g.tier or g.device, gm, blocks, g.compute, _bank_groups(gm),
                                   ways, sets, g.links or g.count))
        self.capacity_blocks = sum(t.capacity_blocks for t in self.tiers)
        if self.capacity_blocks < 1:
            raise ConfigurationError(
                f"system {built.spec.name}'s KV tiers have no room left for KV blocks of {B} "
                "tokens after the weights"
            )
        nt = len(self.tiers)
        self.n_tiers = nt
        # --- per-block state, [slot, block]
        self.max_slots = max_slots
        self._cols = 64
        self.tier = np.full((max_slots, self._cols), -1, dtype=np.int8)
        self.bg = np.zeros((max_slots, self._cols), dtype=np.int32)
        self.imp = np.zeros((max_slots, self._cols), dtype=np.float32)
        self.sal = np.zeros((max_slots, self._cols), dtype=np.float32)
        self.nblk = np.zeros(max_slots, dtype=np.int64)
        self.slot_of = np.full(max(n_requests, 1), -1, dtype=np.int64)  # request id -> slot
        self._free_slots = list(range(max_slots - 1, -1, -1))
        # --- bank-group activity (greedy mapping): ring of the last `window` steps
        self._bg_total = [t.sets * t.n_bg for t in self.tiers]
        self._activity = [np.zeros((self.window, n), dtype=np.float32) for n in self._bg_total]
        self._ring = 0
        # --- pricing tables, by (tier, q_tokens, kind)
        self._tables = AttentionTables(model)
        self._rec = np.zeros(0, dtype=np.float32)
        self._hbm_ru = self._reduction_rate(self.tiers[0])
        # --- metrics
        self.migrated_bytes = 0.0
        self.read_blocks = 0.0
        self.resident_blocks = 0.0
        self.steps = 0
        self.used_block_steps = np.zeros(nt)
        self.peak_used_blocks = np.zeros(nt, dtype=np.int64)
        self.attention_by_tier_s = np.zeros(nt)
        self.written_bytes = np.zeros(nt)

    # ------------------------------------------------------------------ bookkeeping
    @staticmethod
    def _reduction_rate(t: Tier) -> float:
        dev = t.group.device
        rate = getattr(dev, "ru_elems_per_s", 0.0) if isinstance(dev, PIMModel) else 0.0
        return float(rate) * t.group.count

    def _grow(self, cols: int) -> None:
        new = max(cols, 2 * self._cols)
        pad = new - self._cols

        def widen(a: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([a, np.full((a.shape[0], pad), fill, dtype=a.dtype)], axis=1)

        self.tier, self.bg = widen(self.tier, -1), widen(self.bg, 0)
        self.imp, self.sal = widen(self.imp, 0), widen(self.sal, 0)
        self._cols = new

    def _slots(self, reqs: np.ndarray) -> np.ndarray:
        out = self.slot_of[reqs]
        new = np.nonzero(out < 0)[0]
        if new.size:
            if new.size > len(self._free_slots):
                raise AssertionError("more running requests than KV slots")  # pragma: no cover
            for i in new.tolist():
                out[i] = self._free_slots.pop()
            self.slot_of[reqs[new]] = out[new]
        return out

    def release(self, reqs: np.ndarray) -> None:
        """Free the blocks of finished or preempted requests."""
        for r in np.asarray(reqs).tolist():
            s = int(self.slot_of[r])
            self.slot_of[r] = -1
            if s < 0:
                continue
            n = int(self.nblk[s])
            if n:
                t = self.tier[s, :n]
                for k in range(self.n_tiers):
                    self.tiers[k].used -= int(np.count_nonzero(t == k))
                self.tier[s, :n] = -1
            self.nblk[s] = 0
            self._free_slots.append(s)

    def _map(self, k: int, slots: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Global bank-group ids (set x n_bg + bg) on tier ``k`` for new blocks."""
        t = self.tiers[k]
        sets = slots % t.sets
        if self.mapping == "round-robin" or t.n_bg == 1:
            return (sets * t.n_bg + cols % t.n_bg).astype(np.int32)
        act = self._activity[k].sum(axis=0)
        out = np.empty(slots.size, dtype=np.int32)
        for s in np.unique(sets).tolist():
            sel = np.nonzero(sets == s)[0]
            base = s * t.n_bg
            order = np.argsort(act[base: base + t.n_bg], kind="stable")
            out[sel] = base + order[np.arange(sel.size) % t.n_bg]
            # the blocks just placed count as activity for the next placements
            np.add.at(act, out[sel], 1.0)
        return out

    def reserve(self, reqs: np.ndarray, tokens: np.ndarray) -> float:
        """Allocate blocks so request ``reqs[i]`` holds ``tokens[i]`` tokens; returns the bytes
        written to tiers other than the first (their link traffic for the new KV)."""
        if reqs.size == 0:
            return 0.0
        slots = self._slots(reqs)
        need = -(-np.asarray(tokens, dtype=np.int64) // self.block_tokens)
        have = self.nblk[slots]
        grow = np.maximum(need - have, 0)
        total = int(grow.sum())
        written = 0.0
        if total:
            if int(need.max()) > self._cols:
                self._grow(int(need.max()))
            rows = np.repeat(slots, grow)
            cols = np.repeat(have, grow) + (np.arange(total) - np.repeat(np.cumsum(grow) - grow,
                                                                           grow))
            tier_of = np.full(total, -1, dtype=np.int8)
            pos = 0
            for k, t in enumerate(self.tiers):
                room = t.capacity_blocks - t.used
                take = max(0, min(room, total - pos))
                if take:
                    tier_of[pos: pos + take] = k
                    t.used += take
                    pos += take
                if pos == total:
                    break
            if pos < total:
                raise AssertionError("KV blocks over capacity")  # pragma: no cover
            for k in range(self.n_tiers):
                m = tier_of == k
                if m.any():
                    self.bg[rows[m], cols[m]] = self._map(k, rows[m], cols[m])
                    if k > 0:
                        nb = float(m.sum()) * self.block_bytes
                        self.written_bytes[k] += nb
                        written += self.tiers[k].link_time(nb)
            self.tier[rows, cols] = tier_of
            sigma = self.loc.salience_sigma
            self.sal[rows, cols] = self.rng.lognormal(0.0, sigma, total) if sigma else 1.0
            self.imp[rows, cols] = np.nan
            self.nblk[slots] = np.maximum(have, need)
        return written

    # ------------------------------------------------------------------ pricing tables
    def _table(self, k: int, q_tokens: int, cmax: int, selection: bool) -> tuple[np.ndarray, ...]:
        """Per-request (time, energy) of one layer's local attention on one replica set of tier
        ``k`` by tokens read (or, for ``selection``, the approximate-score pass)."""
        t = self.tiers[k]
        if selection:
            hd = max(1, round(self.model.head_dim / DS_CHANNEL_RATIO))
            return self._tables.get(t.group, t.ways, q_tokens, cmax, hd, ("score",))
        return self._tables.get(t.group, t.ways, q_tokens, cmax)

    # ------------------------------------------------------------------ one step
    def _scores(self, slots: np.ndarray, C: int, valid: np.ndarray) -> np.ndarray:
        """This step's per-block scores of the locality model, rows normalised to 1."""
        loc = self.loc
        if self._rec.size < C:
            d = np.arange(max(C, 2 * self._rec.size), dtype=np.float32)
            self._rec = (1.0 + loc.recency_boost * np.exp(-d / loc.recency_blocks)).astype(
                np.float32
            )
        n = self.nblk[slots]
        dist = (n[:, None] - 1 - np.arange(C)[None, :]).clip(0, None)
        # drift: a few blocks redraw their salience each step
        if loc.drift_per_step > 0 and loc.salience_sigma > 0:
            nv = int(n.sum())
            k = self.rng.binomial(nv, loc.drift_per_step) if nv else 0
            if k:
                r = self.rng.integers(0, slots.size, k)
                c = (self.rng.random(k) * n[r]).astype(np.int64)
                self.sal[slots[r], c] = self.rng.lognormal(0.0, loc.salience_sigma, k)
        s = self.sal[slots, :C] * self._rec[dist]
        s[:, 0] *= loc.sink_boost
        s = np.where(valid, s, 0.0)
        tot = s.sum(axis=1, keepdims=True)
        return s / np.where(tot > 0, tot, 1.0)

    def step(self, reqs: np.ndarray, context: np.ndarray, q_tokens: int) -> KVStep:
        """Price one decode step's attention for requests ``reqs`` (ids) attending ``context``
        tokens with ``q_tokens`` query tokens each; update importance, mapping activity and
        placement (migrations). Blocks must have been reserved."""
        out = KVStep(by_tier_s=np.zeros(self.n_tiers))
        self._account_residency()
        if reqs.size == 0:
            return out
        m = self.model
        L = m.n_layers
        slots = self._slots(reqs)
        n = self.nblk[slots]
        C = int(n.max())
        tb = self.tier[slots, :C]
        valid = tb >= 0
        sc = self._scores(slots, C, valid)
        imp = self.imp[slots, :C]
        imp = np.where(np.isnan(imp), sc, self.lam * sc + (1.0 - self.lam) * imp)
        imp = np.where(valid, imp, 0.0)
        self.imp[slots, :C] = imp
        if self.sparse:
            k = np.ceil(n / self.ratio).astype(np.int64)
            srt = -np.sort(-sc, axis=1)
            thr = srt[np.arange(slots.size), np.maximum(k - 1, 0)]
            sel = valid & (sc >= thr[:, None])
        else:
            sel = valid
        self.read_blocks += float(np.count_nonzero(sel))
        self.resident_blocks += float(n.sum())

        ctx = np.asarray(context, dtype=np.int64)
        B = self.block_tokens
        bgs = self.bg[slots, :C]
        self._ring = (self._ring + 1) % self.window
        heads_vals = m.n_heads * q_tokens * (m.head_dim + 2) * m.dtype_bytes  # one partial, B
        slowest = 0.0
        fetch_s = 0.0
        energy = 0.0
        comm_s = 0.0
        fetched_tokens = np.zeros(slots.size, dtype=np.int64)
        tier_time = np.zeros(self.n_tiers)
        first = self.tiers[0]
        single = sum(t.used > 0 for t in self.tiers) <= 1
        for k, t in enumerate(self.tiers):
            act = self._activity[k]
            act[self._ring] = 0.0
            if t.used == 0:
                continue
            on_k = valid if single else tb == k
            read_k = sel if single else sel & on_k
            nread = np.count_nonzero(read_k, axis=1)
            if not nread.any():
                continue
            n_on = n if single else np.count_nonzero(on_k, axis=1)
            tok = np.minimum((nread if self.sparse else n_on) * B, ctx)
            if not t.compute:
                nb = float(tok.sum()) * m.kv_bytes_per_token / L  # one layer's K and V
                fetch_s = max(fetch_s, t.link_time(nb))
                energy += t.link_energy(nb)
                fetched_tokens += tok
                continue
            load = np.bincount(bgs[read_k], minlength=self._bg_total[k]).astype(np.float32)
            act[self._ring] = load
            tab_t, tab_e = self._table(k, q_tokens, int(tok.max()), False)
            per = tab_t[tok]
            energy += float(tab_e[tok].sum())
            if self.sparse:  # approximate scores over all resident blocks of this tier
                res = np.minimum(n_on * B, ctx)
                s_t, s_e = self._table(k, q_tokens, int(res.max()), True)
                per = per + s_t[res]
                energy += float(s_e[res].sum())
            set_of = slots % t.sets
            work = np.bincount(set_of, weights=per, minlength=t.sets)
            lw = load.reshape(t.sets, t.n_bg)
            mean = lw.mean(axis=1)
            imb = np.where(mean > 0, lw.max(axis=1) / np.where(mean > 0, mean, 1.0), 1.0)
            tt = max(float((work * imb).max()), float(per.max()))
            # partial results to HBM-PIM (PAMattention) or per tile to the GPU (without)
            parts = (nread > 0).sum() if self.pamattention else int(nread.sum())
            pb = float(parts) * heads_vals
            x_s = t.link_time(pb) if (k > 0 or not self.pamattention) else 0.0
            energy += t.link_energy(pb)
            tier_time[k] = tt
            slowest = max(slowest, tt + x_s)
        if fetched_tokens.any():  # offloaded KV computed on the first tier, after its fetch
            tok0 = np.minimum((sel & (tb == 0)).sum(axis=1) * B, ctx) + fetched_tokens
            tab_t, tab_e = self._table(0, q_tokens, int(tok0.max()), False)
            per = tab_t[tok0]
            t0 = GroupModel.balanced_time(per, first.sets)
            energy += float(tab_e[tok0].sum())
            tier_time[0] = t0
            slowest = max(slowest, t0, fetch_s)
            comm_s += max(0.0, fetch_s - t0)
        red_s = 0.0
        if self.pamattention and self._hbm_ru > 0:
            tiers_used = int((tier_time > 0).sum())
            elems = float(slots.size) * m.n_heads * q_tokens * (m.head_dim + 2) * tiers_used
            red_s = elems / self._hbm_ru
        out.attention_s = L * (slowest + red_s)
        out.attention_j = L * energy
        out.by_tier_s = L * tier_time
        self.attention_by_tier_s += out.by_tier_s
        out.communication_s = L * comm_s

        if self.scheduling and self.n_tiers > 1:
            out.migration_s = self._rebalance(slots, C, valid)
        return out

    def _account_residency(self) -> None:
        used = np.array([t.used for t in self.tiers])
        self.steps += 1
        self.used_block_steps += used
        self.peak_used_blocks = np.maximum(self.peak_used_blocks, used)

    def _rebalance(self, slots: np.ndarray, C: int, valid: np.ndarray) -> float:
        """Algorithm 2 over the stepping requests' blocks; returns the migration time (s)."""
        if sum(t.used > 0 for t in self.tiers) < 2:
            return 0.0
        rows, cols = np.nonzero(valid)
        rows = slots[rows]
        t = self.tier[rows, cols].astype(np.int64)
        imp = self.imp[rows, cols]
        cap = max(64, int(MAX_SWAP_FRACTION * t.size))
        swaps = algorithm2(imp, t, self.x, self.y, cap)
        if not swaps:
            return 0.0
        link_s = 0.0
        for a, b in swaps:
            ta, tb = self.tier[rows[a], cols[a]].copy(), self.tier[rows[b], cols[b]].copy()
            self.tier[rows[a], cols[a]] = tb
            self.tier[rows[b], cols[b]] = ta
            for k in np.unique(np.concatenate([ta, tb])).tolist():
                ma, mb = tb == k, ta == k
                if ma.any():
                    self.bg[rows[a][ma], cols[a][ma]] = self._map(k, rows[a][ma], cols[a][ma])
                if mb.any():
                    self.bg[rows[b][mb], cols[b][mb]] = self._map(k, rows[b][mb], cols[b][mb])
            nbytes = 2.0 * a.size * self.block_bytes
            self.migrated_bytes += nbytes
            slower = self.tiers[int(max(ta.max(), tb.max()))]
            bw = slower.link_bytes_per_s or self.tiers[0].link_bytes_per_s
            if bw <= 0:
                continue
            if self.migration == "cpu":
                bw /= CPU_MIGRATION_SLOWDOWN
            link_s += nbytes / bw
        return link_s

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
                "migration": self.migration,
            },
        }


