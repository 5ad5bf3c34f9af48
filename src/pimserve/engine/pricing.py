"""Prices one iteration: FC kernel groups placed and costed, attention, transfers, collectives.

The iteration of a decoder layer runs, in order: QKV generation (FC) -> transfer of Q/K/V to the
attention devices -> attention -> transfer of the outputs back -> output projection (FC) ->
all-reduce -> FFN or MoE experts (FC) -> all-reduce. All decoder layers are alike, so one layer
is priced and multiplied by the number of layers; the LM head runs once.

Speed: the FC part of a layer depends only on the tokens in flight (and, for MoE, the routing),
so it is memoised on those. Attention costs per request depend only on the request's context
(for a given number of query tokens), so they are tabulated once over all contexts and looked
up with numpy fancy indexing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pimserve.engine.kv import KVStep
from pimserve.engine.system import BuiltSystem
from pimserve.engine.tables import (
    PREFILL_TABLE_MAX,
    AttentionTables,
    layer_attention_kernels,
)
from pimserve.errors import ConfigurationError
from pimserve.hardware.cost import Cost
from pimserve.hardware.gpu import allreduce_time_s
from pimserve.hardware.group import GroupModel
from pimserve.ops import BatchShape, iteration
from pimserve.ops.iteration import ATTENTION_OPS
from pimserve.ops.kernels import AttnOp, CollectiveKernel, FCKernel
from pimserve.policies.fc_placement import GPU, PIM, FCPlacement
from pimserve.specs.model import ModelSpec


@dataclass(frozen=True)
class FCPart:
    """One layer's FC kernels (or the LM head) after placement."""

    time_s: float
    energy_j: float
    gpu_s: float
    pim_s: float
    comm_s: float  # tensor-parallel all-reduce
    gpu_flops: float
    flops: float
    placements: tuple[tuple[str, str], ...]  # (kernel group, target)
    gpu_j: float = 0.0  # energy of the FC kernels on the GPUs, J
    pim_j: float = 0.0  # energy of the FC kernels on FC-PIM, J
    comm_j: float = 0.0  # energy of the tensor-parallel all-reduces, J
    # per kernel, in the layer's order: (kernel, group, target, time s, FLOPs, bytes moved);
    # memoised with the part, read only by the timeline
    kernels: tuple[tuple[str, str, str, float, float, float], ...] = ()


@dataclass
class StepCost:
    """Time and energy of one iteration, with the breakdown the results report."""

    time_s: float = 0.0
    energy_j: float = 0.0
    fc_gpu_s: float = 0.0
    fc_pim_s: float = 0.0
    attention_s: float = 0.0
    communication_s: float = 0.0
    other_s: float = 0.0
    norms_s: float = 0.0  # layer norms, residual adds and the FFN activation
    fc_gpu_flops: float = 0.0
    fc_flops: float = 0.0
    # energy by the same parts as the time (they add up to energy_j), J
    fc_gpu_j: float = 0.0
    fc_pim_j: float = 0.0
    attention_j: float = 0.0
    communication_j: float = 0.0
    other_j: float = 0.0
    norms_j: float = 0.0


class IterationPricer:
    """Prices iterations of ``model`` on a built system with an FC placement policy."""

    def __init__(
        self,
        built: BuiltSystem,
        placement: FCPlacement,
        draft_model: ModelSpec | None = None,
    ):
        self.built = built
        self.model = built.model
        self.placement = placement
        self.draft_model = draft_model
        self._fc: dict[tuple, Any] = {}  # memo: FC parts, transfers, draft passes
        self._attn_tables = AttentionTables(built.model)
        self._prefill_tables = True  # whole prompts' attention from a table (tests switch it)
        self.attn_group = built.attention_group
        self._dataflow = self.attn_group.dataflow
        self._once_ops = tuple(o for o in ATTENTION_OPS if o in self._dataflow.once_ops)
        self._stream_ops = tuple(o for o in ATTENTION_OPS if o not in self._dataflow.once_ops)
        m = self.model
        self._qkv_bytes_per_token = (m.q_dim + 2 * m.kv_dim) * m.dtype_bytes
        self._out_bytes_per_token = m.q_dim * m.dtype_bytes
        self._kv_bytes_per_token_layer = 2 * m.kv_dim * m.dtype_bytes

    # ---------------------------------------------------------------- FC
    def fc_layer(
        self, m_tokens: int, prefill: bool, expert_tokens: tuple[int, ...] | None
    ) -> FCPart:
        """One decoder layer's FC kernels for ``m_tokens`` tokens in flight (memoised)."""
        key = ("layer", m_tokens, prefill, expert_tokens)
        part = self._fc.get(key)
        if part is None:
            et = np.asarray(expert_tokens) if expert_tokens is not None else None
            it = iteration(
                self.model,
                BatchShape(np.array([m_tokens]), np.array([m_tokens])),
                tp=1,
                expert_tokens=et,
                lm_head=False,
            )
            part = self._place([k for k in it.fc if k.name != "lm_head"], prefill, layer=True)
            self._fc[key] = part
        return part

    def _overlap_parts(
        self, fc: FCPart, m_tokens: int, ovl: Any
    ) -> tuple[float, float, float, float]:
        """(GPU FC outside the overlap, QKV + output projection, FFN, extra J) of one decode
        layer under AttAcc's overlap (see :meth:`_overlap`)."""
        proj = sum(k[3] for k in fc.kernels if k[1] == "attn_fc" and k[2] == GPU)
        ffn = sum(k[3] for k in fc.kernels if k[1] != "attn_fc" and k[2] == GPU)
        rest = fc.gpu_s - proj - ffn
        extra_j = 0.0
        if ovl.ffn_on_attention_pim and ffn > 0:
            key = ("ovl_ffn", m_tokens)
            pim = self._fc.get(key)
            if pim is None:
                ks = [k for k in self._layer_kernels(m_tokens) if k.group != "attn_fc"]
                costs = [self.attn_group.fc(k) for k in ks]
                pim = (sum(float(c.time_s) for c in costs), sum(float(c.energy_j) for c in costs))
                self._fc[key] = pim
            t_pim, e_pim = pim
            if t_pim > 0:
                both = 1.0 / (1.0 / ffn + 1.0 / t_pim)
                share_pim = both / t_pim  # fraction of the FFN the PIM devices compute
                gpu_share = 1.0 - share_pim
                extra_j = e_pim * share_pim - fc.gpu_j * (ffn / fc.gpu_s) * (1 - gpu_share)
                ffn = both
        return rest, proj, ffn, extra_j

    def _overlap(
        self, fc: FCPart, attn_s: float, m_tokens: int, ovl: Any
    ) -> tuple[float, float, float]:
        """One decode layer under AttAcc's overlap: (GPU FC s, attention s, extra J).

        Pipelining in ``S`` sub-batches hides the shorter of (QKV + output projection on the
        GPUs, PIM attention) behind the longer except for one sub-batch's share: the layer pays
        ``max + min / S``; the hidden part is taken from the shorter one's category. With
        ``ffn_on_attention_pim`` the FFN runs on the GPUs and the attention group at once,
        split by speed: ``1 / (1 / t_gpu + 1 / t_pim)``; the PIM's share adds its energy."""
        rest, proj, ffn, extra_j = self._overlap_parts(fc, m_tokens, ovl)
        fc_s, attn = self._overlap_combine(rest, proj, ffn, attn_s, ovl.subbatches)
        return float(fc_s), float(attn), extra_j

    @staticmethod
    def _overlap_combine(rest: float, proj: float, ffn: float, attn_s: Any,
                         subbatches: int) -> tuple[Any, Any]:
        """(GPU FC s, attention s) of a layer whose QKV + projection (``proj``) is pipelined
        with attention in ``subbatches``: the shorter hides behind the longer but for
        ``min / S``, taken from the shorter one's category; ``attn_s`` a float or an array of
        iterations (elementwise, the same arithmetic)."""
        hidden = np.minimum(proj, attn_s) * (1.0 - 1.0 / max(1, subbatches))
        proj_first = proj <= attn_s
        fc_s = np.where(proj_first, rest + (proj - hidden) + ffn, rest + proj + ffn)
        return fc_s, np.where(proj_first, attn_s, attn_s - hidden)

    # ---------------------------------------------------------------- runs of iterations
    def decode_run(
        self, ctx0: np.ndarray, tlp: int, k: int,
        kv_attention: tuple[np.ndarray, np.ndarray] | None = None,
        rlp: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """``k`` decode-only iterations of the same requests, the ``j``-th attending
        ``ctx0 + j x tlp`` tokens, priced at once: the fields of :class:`StepCost` as arrays
        over the iterations, with :meth:`step`'s arithmetic (no draft model, no MoE routing;
        the caller checks). FC, LM head, transfers and norms do not change between the
        iterations; attention is looked up for all of them in one call, or, on a system with
        KV tiers, is ``kv_attention``: each iteration's KV step's attention (s) and energy
        (J), all layers (:meth:`KVHierarchy.decode_run`; one tier: no KV writes, fetches or
        migrations).

        ``rlp`` (with ``kv_attention``): the requests decoding at each iteration, where some
        finish inside the run (None: all of ``ctx0`` at every one); each iteration is
        priced as :meth:`step` prices its own batch (:meth:`_decode_run_kv`)."""
        if kv_attention is not None:
            return self._decode_run_kv(tlp, k, kv_attention,
                                       np.full(k, ctx0.size) if rlp is None else rlp)
        assert rlp is None, "rlp needs kv_attention"
        n_dec = int(ctx0.size)
        m_dec = m_tok = n_dec * tlp
        L = self.model.n_layers
        fc = self._fc_for(m_tok, False, None)
        head = self.lm_head(m_dec, False)
        g = self.attn_group
        ctx = ctx0[None, :] + tlp * np.arange(k, dtype=np.int64)[:, None]
        cmax = int(ctx[-1].max())
        t_tab, e_tab = self.attention_table(tlp, cmax, self._stream_ops)
        attn_j = e_tab[ctx].sum(axis=1)
        if self._once_ops:
            o_tab, oe_tab = self.attention_table(tlp, cmax, self._once_ops)
            once = o_tab[ctx].max(axis=1)
            attn_j = attn_j + oe_tab[ctx].sum(axis=1)
        else:
            once = np.zeros(k)
        attn_s = self._dataflow.group_time_rows_s(t_tab[ctx], once, self.model.n_kv_heads,
                                                  g.count)
        comm_s = fc.comm_s
        comm_j = 0.0
        if n_dec and g.link is not None:
            x_s, x_j = self.decode_transfers(m_dec)
            comm_s += x_s
            comm_j += x_j
        norm_s, norm_j = self.norms_and_activation(m_tok)
        fc_gpu_layer_s: Any = fc.gpu_s
        ovl_j = 0.0
        ovl = self.built.spec.policies.overlap
        if ovl is not None and n_dec and self.built.gpu:
            rest, proj, ffn, ovl_j = self._overlap_parts(fc, m_tok, ovl)
            fc_gpu_layer_s, attn_s = self._overlap_combine(rest, proj, ffn, attn_s,
                                                           ovl.subbatches)
        ones = np.ones(k)
        out: dict[str, np.ndarray] = {}
        out["fc_gpu_s"] = (L * fc_gpu_layer_s + head.gpu_s) * ones
        out["fc_pim_s"] = (L * fc.pim_s + head.pim_s) * ones
        out["attention_s"] = L * attn_s
        out["communication_s"] = (L * comm_s + head.comm_s) * ones
        out["other_s"] = np.zeros(k)
        out["norms_s"] = (L * norm_s) * ones
        out["time_s"] = (out["fc_gpu_s"] + out["fc_pim_s"] + out["attention_s"]
                         + out["communication_s"] + 0.0 + out["norms_s"])
        out["energy_j"] = L * (fc.energy_j + attn_j + comm_j + norm_j + ovl_j) + head.energy_j \
            + 0.0
        out["fc_gpu_j"] = (L * (fc.gpu_j + ovl_j) + head.gpu_j) * ones
        out["fc_pim_j"] = (L * fc.pim_j + head.pim_j) * ones
        out["attention_j"] = L * attn_j
        out["communication_j"] = (L * (fc.comm_j + comm_j) + head.comm_j) * ones
        out["other_j"] = np.zeros(k)
        out["norms_j"] = (L * norm_j) * ones
        out["fc_gpu_flops"] = (1.0 * (L * fc.gpu_flops + head.gpu_flops)) * ones
        out["fc_flops"] = (1.0 * (L * fc.flops + head.flops)) * ones
        return out

    def _decode_consts(self, n_dec: int, tlp: int) -> tuple[float, ...]:
        """What :meth:`_decode_run_kv` adds to a KV run's attention for an iteration of
        ``n_dec`` decoding requests, as :meth:`step` prices it (memoised): (FC on GPUs s,
        FC on PIM s, communication s, norms s, the rest of the energy per layer J (FC,
        transfers), norms J per layer, LM head J, FC-on-GPU J, FC-on-PIM J,
        communication J, FC-on-GPU FLOPs, FC FLOPs), all layers where not said."""
        key = ("decode_consts", n_dec, tlp)
        hit = self._fc.get(key)
        if hit is not None:
            return hit
        m_dec = m_tok = n_dec * tlp
        L = self.model.n_layers
        fc = self._fc_for(m_tok, False, None)
        head = self.lm_head(m_dec, False)
        comm_s = fc.comm_s
        comm_j = 0.0
        if n_dec and self.attn_group.link is not None:
            x_s, x_j = self.decode_transfers(m_dec)
            comm_s += x_s
            comm_j += x_j
        norm_s, norm_j = self.norms_and_activation(m_tok)
        out = (L * fc.gpu_s + head.gpu_s, L * fc.pim_s + head.pim_s, L * comm_s + head.comm_s,
               L * norm_s, fc.energy_j, comm_j, norm_j, head.energy_j,
               L * (fc.gpu_j + 0.0) + head.gpu_j, L * fc.pim_j + head.pim_j,
               L * (fc.comm_j + comm_j) + head.comm_j,
               1.0 * (L * fc.gpu_flops + head.gpu_flops), 1.0 * (L * fc.flops + head.flops))
        self._fc[key] = out
        return out

    def _decode_run_kv(
        self, tlp: int, k: int, kv_attention: tuple[np.ndarray, np.ndarray],
        rlp: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """:meth:`decode_run` on a system with KV tiers: the KV steps' attention (s, J, all
        layers) plus each iteration's FC, LM head, transfers and norms for its own batch
        (``rlp[j]`` requests; the batch shrinks as requests finish), with :meth:`step`'s
        arithmetic elementwise (no overlap: :meth:`step` applies none with a KV step)."""
        L = self.model.n_layers
        r = rlp[:k]  # (never grows: requests only finish inside a run)
        if r[0] == r[k - 1]:
            tab = np.tile(np.array(self._decode_consts(int(r[0]), tlp)), (k, 1))
        else:
            step = np.empty(k, dtype=bool)
            step[0] = False
            np.not_equal(r[1:], r[:-1], out=step[1:])
            vals = r[np.flatnonzero(step)].tolist()
            tab = np.array([self._decode_consts(int(r[0]), tlp)]
                           + [self._decode_consts(v, tlp) for v in vals])[np.cumsum(step)]
        (fc_gpu, fc_pim, comm, norms, fc_e, comm_j, norm_j, head_e, gpu_j, pim_j, comm_all_j,
         gpu_flops, flops) = tab.T
        attn_s, attn_j = kv_attention[0] / L, kv_attention[1] / L
        out: dict[str, np.ndarray] = {}
        out["fc_gpu_s"] = fc_gpu
        out["fc_pim_s"] = fc_pim
        out["attention_s"] = L * attn_s
        out["communication_s"] = comm
        out["other_s"] = np.zeros(k)
        out["norms_s"] = norms
        out["time_s"] = (fc_gpu + fc_pim + out["attention_s"] + comm + 0.0 + norms)
        out["energy_j"] = L * (fc_e + attn_j + comm_j + norm_j + 0.0) + head_e + 0.0
        out["fc_gpu_j"] = gpu_j
        out["fc_pim_j"] = pim_j
        out["attention_j"] = L * attn_j
        out["communication_j"] = comm_all_j
        out["other_j"] = np.zeros(k)
        out["norms_j"] = L * norm_j
        out["fc_gpu_flops"] = gpu_flops
        out["fc_flops"] = flops
        return out

    def _layer_kernels(self, m_tokens: int) -> list[FCKernel]:
        """One decoder layer's FC kernels for ``m_tokens`` tokens (no LM head)."""
        it = iteration(self.model, BatchShape(np.array([m_tokens]), np.array([m_tokens])),
                       tp=1, lm_head=False)
        return [k for k in it.fc if k.name != "lm_head"]

    @property
    def norms_group(self) -> GroupModel:
        """Where the layer norms and the activation run: the GPUs, or without GPUs the devices
        that run the FC kernels (near their memory)."""
        return (self.built.gpu or next(iter(self.built.fc_groups.values()), None)
                or self.attn_group)

    def norms_and_activation(self, m_tokens: int) -> tuple[float, float]:
        """One layer's two layer norms (each with its residual add) and FFN activation for
        ``m_tokens`` tokens: (s, J) (memoised). A norm reads the hidden state and the residual
        and writes the sum (3 x m x hidden), replicated on every tensor-parallel GPU; the
        activation reads gate and up and writes their product, a 1/TP slice each. On GPUs each
        kernel pays its measured fixed time (:meth:`GPUModel.elementwise`); systems without
        GPUs run them on the devices that run the FC kernels, split over them, at their I/O
        bandwidth (:meth:`PIMModel.elementwise`)."""
        key = ("norm_act", m_tokens)
        hit = self._fc.get(key)
        if hit is not None:
            return hit
        m = self.model
        tp = max(1, self.built.spec.tensor_parallel)
        db = m.dtype_bytes
        ffn = m.ffn_size * max(1, m.experts_per_token)
        norm_b = 3.0 * m_tokens * m.hidden_size * db
        act_b = 3.0 * m_tokens * ffn / tp * db
        g = self.norms_group
        if self.built.gpu is None:  # on the devices that run the FC kernels, split over them
            act_b = 3.0 * m_tokens * ffn * db / g.count
            norm_b = norm_b / g.count
        out = (0.0, 0.0)
        if hasattr(g.device, "elementwise"):
            norm = g.device.elementwise("norm", norm_b)
            act = g.device.elementwise("activation", act_b)
            out = (2 * float(norm.time_s) + float(act.time_s),
                   (2 * float(norm.energy_j) + float(act.energy_j)) * g.count)
        self._fc[key] = out
        return out

    def lm_head(self, m_tokens: int, prefill: bool) -> FCPart:
        """The LM head over ``m_tokens`` tokens that need logits (memoised)."""
        key = ("lm_head", m_tokens, prefill)
        part = self._fc.get(key)
        if part is None:
            m = self.model
            k = FCKernel("lm_head", m_tokens, m.hidden_size, m.vocab_size, 1, m.dtype_bytes,
                         "lm_head")
            part = self._place([k], prefill, layer=False)
            self._fc[key] = part
        return part

    def _place(self, kernels: list[FCKernel], prefill: bool, layer: bool) -> FCPart:
        groups = self.built.fc_groups
        by_group: dict[str, list[FCKernel]] = {}
        for k in kernels:
            by_group.setdefault(k.group, []).append(k)
        time = energy = gpu_s = pim_s = comm = gpu_flops = flops = 0.0
        gpu_j = pim_j = comm_j = 0.0
        placements = []
        kernel_s: dict[int, tuple[str, float]] = {}  # id(kernel) -> (target, time s)
        for gname, ks in by_group.items():
            costs: dict[str, Cost] = {}
            each: dict[str, list[float]] = {}

            def price(target: str, ks: list[FCKernel] = ks, costs: dict = costs,
                      each: dict = each) -> float:
                if target not in costs:
                    g = groups[target]
                    c = Cost(0.0, 0.0)
                    ts = []
                    for k in ks:
                        ck = g.fc(k)
                        c = c + ck
                        ts.append(float(ck.time_s))
                    costs[target] = c
                    each[target] = ts
                return float(costs[target].time_s)

            if prefill and GPU in groups:
                target = GPU  # prefill runs on the compute-centric device where there is one
            elif len(groups) == 1:
                target = next(iter(groups))
            else:
                target = self.placement.place(max(k.m for k in ks), prefill, price)
            t = price(target)
            c = costs[target]
            time += t
            energy += float(c.energy_j)
            f = sum(k.flops for k in ks)
            flops += f
            if target == GPU:
                gpu_s += t
                gpu_flops += f
                gpu_j += float(c.energy_j)
            else:
                pim_s += t
                pim_j += float(c.energy_j)
            placements.append((gname, target))
            for k, tk in zip(ks, each[target], strict=True):
                kernel_s[id(k)] = (target, tk)
        per_kernel = tuple(
            (k.name, k.group, *kernel_s[id(k)], float(k.flops), float(k.bytes_total))
            for k in kernels
        )
        if layer:
            # tensor-parallel all-reduce after the output projection and after the FFN: the FC
            # outputs are split over the TP domains wherever the FC ran (GPU or its FC-PIM)
            m_tok = max(k.m for k in kernels if not k.group.startswith("expert"))
            ar_s, ar_j = self.allreduce(m_tok)
            comm += 2 * ar_s
            time += 2 * ar_s
            energy += 2 * ar_j
            comm_j += 2 * ar_j
        return FCPart(time, energy, gpu_s, pim_s, comm, gpu_flops, flops, tuple(placements),
                      gpu_j, pim_j, comm_j, per_kernel)

    def decode_transfers(self, m_dec: int) -> tuple[float, float]:
        """Q/K/V of ``m_dec`` decode tokens to the attention devices and outputs back (s, J)."""
        key = ("xfer", m_dec)
        hit = self._fc.get(key)
        if hit is None:
            g = self.attn_group
            x_in = g.transfer(m_dec * self._qkv_bytes_per_token)
            x_out = g.transfer(m_dec * self._out_bytes_per_token)
            hit = (float(x_in.time_s + x_out.time_s), float(x_in.energy_j + x_out.energy_j))
            self._fc[key] = hit
        return hit

    def allreduce(self, m_tokens: int) -> tuple[float, float]:
        """One all-reduce of ``m_tokens`` hidden vectors over the TP domains: (s, J)."""
        tp = self.built.spec.tensor_parallel
        if tp <= 1:
            return 0.0, 0.0
        nbytes = m_tokens * self.model.hidden_size * self.model.dtype_bytes
        k = CollectiveKernel("allreduce", nbytes, tp)
        if self.built.gpu is not None:
            c = self.built.gpu.collective(k)
            return float(c.time_s), float(c.energy_j)
        link = self.built.collective_link
        if link is None:
            raise ConfigurationError(
                f"system {self.built.spec.name} has tensor_parallel {tp} but no GPU and no "
                "collective_link to all-reduce over"
            )
        # AttAcc's ring formula, with the link's bandwidth in both directions
        t = allreduce_time_s(nbytes, tp, 2 * link.spec.bw_gbps)
        # the same ring traffic as the GPUs' (GPUModel.collective): 2 (tp - 1) x bytes in all
        return t, nbytes * 8 * link.spec.energy_pj_per_bit * 1e-12 * 2 * (tp - 1)

    # ---------------------------------------------------------------- attention
    def attention_table(
        self, q_tokens: int, cmax: int, ops: tuple[AttnOp, ...] = ATTENTION_OPS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-request (time, energy) of one layer's attention ``ops`` per placement unit of the
        attention group's dataflow (time without refresh; energy of all units), by context."""
        return self._attn_tables.get(self.attn_group, q_tokens, cmax, ops=ops)

    def decode_attention(self, q_tokens: int, context: np.ndarray) -> tuple[float, float]:
        """One layer's decode attention for requests with ``context`` KV tokens: (s, J)."""
        if context.size == 0:
            return 0.0, 0.0
        cmax = int(context.max())
        t_tab, e_tab = self.attention_table(q_tokens, cmax, self._stream_ops)
        once_s, energy = 0.0, float(e_tab[context].sum())
        if self._once_ops:
            o_tab, oe_tab = self.attention_table(q_tokens, cmax, self._once_ops)
            once_s = float(o_tab[context].max())
            energy += float(oe_tab[context].sum())
        g = self.attn_group
        return self._dataflow.group_time_s(t_tab[context], once_s, self.model.n_kv_heads,
                                           g.count), energy

    def prefill_attention(
        self, q: np.ndarray, context: np.ndarray
    ) -> tuple[float, float, GroupModel]:
        """One layer's prefill attention, on the GPUs where there are some: (s, J, group).
        Memoised for a few requests (the common case: one prompt's chunk at a time)."""
        g = self.built.gpu or self.attn_group
        key = None
        if q.size <= 4:
            key = ("prefill_attn", q.tobytes(), context.tobytes())
            hit = self._fc.get(key)
            if hit is not None:
                return hit[0], hit[1], g
        if (self._prefill_tables and np.array_equal(q, context) and int(q.min()) >= 1
                and int(q.max()) <= PREFILL_TABLE_MAX):
            # whole prompts (the common case): the units' costs from a table by length, then
            # g.attention's combination (the same numbers: its per-request costs are these)
            time_s = energy_j = 0.0
            n_kv = self.model.n_kv_heads
            ways = g.dataflow.units_per_request(n_kv, g.count)
            for op, t_tab, e_tab in self._attn_tables.prefill_units(g, int(q.max())):
                time_s += g.units_time_s(op, t_tab[q], n_kv)
                energy_j += float(np.sum(e_tab[q])) * ways
            out = (float(time_s), float(energy_j))
        else:
            c = Cost(0.0, 0.0)
            for k in layer_attention_kernels(self.model, q, context):
                c = c + g.attention(k)
            out = (float(c.time_s), float(c.energy_j))
        if key is not None:
            self._fc[key] = out
        return out[0], out[1], g

    def _fc_for(
        self, m_tok: int, prefill: bool, expert_tokens: tuple[int, ...] | None
    ) -> FCPart:
        """One layer's FC part for ``m_tok`` tokens, pipeline stages included."""
        pp = self.built.spec.pipeline_parallel
        if pp <= 1:
            return self.fc_layer(m_tok, prefill, expert_tokens)
        # PP stages work on PP micro-batches at once: per iteration each stage runs its L/PP
        # layers PP times on m/PP tokens, i.e. L layers' time at m/PP tokens; energy and
        # FLOPs are paid by every micro-batch (bubbles are ignored: continuous batching
        # keeps the pipeline full)
        mb = -(-m_tok // pp)
        et = tuple(-(-e // pp) for e in expert_tokens) if expert_tokens else expert_tokens
        fc = self._fc.get(("pp", mb, prefill, et))
        if fc is None:  # memoised like the layer itself
            f1 = self.fc_layer(mb, prefill, et)
            fc = replace(f1, energy_j=f1.energy_j * pp, gpu_flops=f1.gpu_flops * pp,
                         flops=f1.flops * pp, gpu_j=f1.gpu_j * pp, pim_j=f1.pim_j * pp,
                         comm_j=f1.comm_j * pp)
            self._fc["pp", mb, prefill, et] = fc
        return fc

    # ---------------------------------------------------------------- one iteration
    def step(
        self,
        dec_context: np.ndarray,
        tlp: int,
        pre_q: np.ndarray,
        pre_context: np.ndarray,
        expert_tokens: tuple[int, ...] | None = None,
        kv_step: KVStep | None = None,
        kv_write_s: float = 0.0,
        trace: dict[str, Any] | None = None,
    ) -> StepCost:
        """Price one iteration: decode requests (``tlp`` tokens each, attending
        ``dec_context``) and prefill chunks (``pre_q`` tokens attending ``pre_context``).

        Systems with KV tiers price decode attention in their :class:`KVHierarchy` and pass
        its result as ``kv_step`` (all layers), with ``kv_write_s`` for new KV written to the
        lower tiers; migrations overlap the iteration (the step takes the longer of the two).

        With ``trace`` (a dict, for the timeline only) the iteration's schedule is written into
        it as plain data (see :meth:`_trace`); without it nothing extra is computed.
        """
        n_dec = int(dec_context.size)
        m_dec = n_dec * tlp
        m_pre = int(pre_q.sum()) if pre_q.size else 0
        m_tok = m_dec + m_pre
        L = self.model.n_layers
        sc = StepCost()
        if m_tok == 0:
            return sc
        prefill = m_pre > 0
        fc = self._fc_for(m_tok, prefill, expert_tokens)
        head = self.lm_head(m_dec + int(pre_q.size), prefill)
        if kv_step is None:
            attn_s, attn_j = self.decode_attention(tlp, dec_context)
        else:
            attn_s, attn_j = kv_step.attention_s / L, kv_step.attention_j / L
        comm_s = fc.comm_s
        comm_j = 0.0
        link_group = self.attn_group
        if n_dec and link_group.link is not None:
            x_s, x_j = self.decode_transfers(m_dec)
            comm_s += x_s
            comm_j += x_j
        dec_attn_s = attn_s
        pre_part: tuple[float, GroupModel] | None = None
        if prefill:
            p_s, p_j, g = self.prefill_attention(pre_q, pre_context)
            pre_part = (p_s, g)
            attn_s += p_s
            attn_j += p_j
            if g is not link_group and link_group.link is not None:  # KV written to PIM
                x = link_group.transfer(m_pre * self._kv_bytes_per_token_layer)
                comm_s += float(x.time_s)
                comm_j += float(x.energy_j)
        other_s = other_j = 0.0
        if self.draft_model is not None and n_dec and tlp > 1:
            other_s, other_j = self._draft(n_dec, tlp)
        norm_s, norm_j = self.norms_and_activation(m_tok)
        fc_gpu_layer_s, ovl_j = fc.gpu_s, 0.0
        ovl = self.built.spec.policies.overlap
        if ovl is not None and n_dec and not prefill and kv_step is None and self.built.gpu:
            # AttAcc's overlap: FC on the GPUs beside PIM attention (OverlapSpec)
            fc_gpu_layer_s, attn_s, ovl_j = self._overlap(fc, attn_s, m_tok, ovl)
        sc.fc_gpu_s = L * fc_gpu_layer_s + head.gpu_s
        sc.fc_pim_s = L * fc.pim_s + head.pim_s
        sc.attention_s = L * attn_s
        sc.communication_s = L * comm_s + head.comm_s
        sc.other_s = other_s
        sc.norms_s = L * norm_s
        if kv_step is not None:
            sc.communication_s += kv_step.communication_s + kv_write_s
        sc.time_s = (sc.fc_gpu_s + sc.fc_pim_s + sc.attention_s + sc.communication_s + other_s
                     + sc.norms_s)
        if kv_step is not None and kv_step.migration_s > sc.time_s:
            sc.communication_s += kv_step.migration_s - sc.time_s  # migration not hidden
            sc.time_s = kv_step.migration_s
        sc.energy_j = (L * (fc.energy_j + attn_j + comm_j + norm_j + ovl_j) + head.energy_j
                       + other_j)
        sc.fc_gpu_j = L * (fc.gpu_j + ovl_j) + head.gpu_j
        sc.fc_pim_j = L * fc.pim_j + head.pim_j
        sc.attention_j = L * attn_j
        sc.communication_j = L * (fc.comm_j + comm_j) + head.comm_j
        sc.other_j = other_j
        sc.norms_j = L * norm_j
        # PAPI's placement metric counts decode work: the decode tokens' share of the FC FLOPs
        dec_share = m_dec / m_tok
        sc.fc_gpu_flops = dec_share * (L * fc.gpu_flops + head.gpu_flops)
        sc.fc_flops = dec_share * (L * fc.flops + head.flops)
        if trace is not None:
            self._trace(trace, fc, head, dec_context, tlp, pre_q, dec_attn_s, pre_part,
                        kv_step, other_s, L * norm_s)
        return sc

    # ---------------------------------------------------------------- timeline
    def track_of(self, g: GroupModel) -> str:
        """The timeline track of a device group: its role, or ``tier:<label>`` for a KV tier."""
        return f"tier:{g.tier}" if g.role == "kv_tier" and g.tier else g.role

    def _fc_slices(
        self, kernels: tuple[tuple[str, str, str, float, float, float], ...], t: float,
        out: list[list[Any]], work: float = 1.0,
    ) -> float:
        """Append FC slices (one per placement group; QKV and the output projection apart) to
        ``out`` from offset ``t`` (s); returns the offset after them. ``work`` scales the
        FLOPs and bytes reported (pipeline micro-batches)."""
        groups = self.built.fc_groups
        i = 0
        while i < len(kernels):
            name, group, target, dur, flops, nbytes = kernels[i]
            names = [name]
            j = i + 1
            if group != "attn_fc":  # a placement group's kernels run back to back
                while j < len(kernels) and kernels[j][1] == group:
                    dur += kernels[j][3]
                    flops += kernels[j][4]
                    nbytes += kernels[j][5]
                    names.append(kernels[j][0])
                    j += 1
                name = group
            i = j
            if dur > 0:
                out.append([self.track_of(groups[target]), name, t, dur,
                            {"on": target, "kernels": names, "flops": flops * work,
                             "bytes": nbytes * work}])
                t += dur
        return t

    def _trace(
        self, trace: dict[str, Any], fc: FCPart, head: FCPart, dec_context: np.ndarray, tlp: int,
        pre_q: np.ndarray, dec_attn_s: float, pre_part: tuple[float, GroupModel] | None,
        kv_step: KVStep | None, other_s: float, norm_act_s: float = 0.0,
    ) -> None:
        """Write one iteration's schedule into ``trace`` as plain data, as :meth:`step` priced
        it (the parts it adds up run one after another; KV tiers and migration run alongside).

        Reads from ``trace`` (given by the engine for KV-tier systems): ``tiers`` (tier labels,
        in the order of ``kv_step.by_tier_s``), ``kv_write`` (``[tier, bytes, s]`` of new KV
        written to lower tiers), ``migrated_bytes`` and ``merge_track``. Writes:
        ``n_layers``; ``layer`` (one decoder layer's slices ``[track, name, offset s, duration
        s, args]``, offsets from the layer's start; every layer is alike); ``layer_s`` (one
        layer's time); ``layers_start_s`` (offset of the first layer in the iteration); and
        ``slices`` (the iteration's other slices, offsets from the iteration's start).
        """
        m = self.model
        L = m.n_layers
        n_dec = int(dec_context.size)
        m_dec = n_dec * tlp
        m_pre = int(pre_q.sum()) if pre_q.size else 0
        layer: list[list[Any]] = []
        it: list[list[Any]] = []
        before = tuple(k for k in fc.kernels if k[0] == "qkv")
        after = tuple(k for k in fc.kernels if k[0] != "qkv")
        # ---- one decoder layer
        pp = self.built.spec.pipeline_parallel
        t = 0.0
        if norm_act_s > 0:  # the layer's norms, residual adds and activation, drawn as one
            layer.append([self.track_of(self.norms_group), "norms+activation", 0.0,
                          norm_act_s / L,
                          {"kernels": 3}])
            t = norm_act_s / L
        t = self._fc_slices(before, t, layer, pp)
        g = self.attn_group
        link_track = "link:attn"
        x_in = x_out = 0.0
        if n_dec and g.link is not None:
            b_in, b_out = m_dec * self._qkv_bytes_per_token, m_dec * self._out_bytes_per_token
            x_in, x_out = float(g.transfer(b_in).time_s), float(g.transfer(b_out).time_s)
            layer.append([link_track, "qkv-transfer", t, x_in, {"bytes": b_in}])
            t += x_in
        if n_dec:
            ctx = {"kv_tokens_mean": float(dec_context.mean()),
                   "kv_tokens_max": int(dec_context.max())}
            if kv_step is None:
                layer.append([self.track_of(g), "attention", t, dec_attn_s,
                              {"requests": n_dec, **ctx}])
            else:
                self._kv_slices(layer, trace, kv_step, t, dec_attn_s, n_dec, ctx)
            t += dec_attn_s
        if pre_part is not None:
            p_s, pg = pre_part
            layer.append([self.track_of(pg), "prefill-attention", t, p_s,
                          {"requests": int(pre_q.size), "tokens": m_pre}])
            t += p_s
            if pg is not g and g.link is not None:
                nb = m_pre * self._kv_bytes_per_token_layer
                d = float(g.transfer(nb).time_s)
                layer.append([link_track, "prefill-kv-write", t, d, {"bytes": nb}])
                t += d
        if x_out > 0:
            layer.append([link_track, "out-transfer", t, x_out,
                          {"bytes": m_dec * self._out_bytes_per_token}])
            t += x_out
        ar = fc.comm_s / 2
        ar_bytes = (m_dec + m_pre) * m.hidden_size * m.dtype_bytes
        proj = tuple(k for k in after if k[1] == "attn_fc")
        rest_k = tuple(k for k in after if k[1] != "attn_fc")
        t = self._fc_slices(proj, t, layer, pp)
        for part in (rest_k, None):
            if ar > 0:
                layer.append(["link:allreduce", "allreduce", t, ar,
                              {"bytes": ar_bytes, "tp": self.built.spec.tensor_parallel}])
                t += ar
            if part is not None:
                t = self._fc_slices(part, t, layer, pp)
        trace["n_layers"] = L
        trace["layer"] = layer
        trace["layer_s"] = t
        # ---- the iteration around the layers
        t0 = 0.0
        if other_s > 0:
            on = self.track_of(self.built.gpu or self.built.attention_group)
            it.append([on, "draft", 0.0, other_s, {"passes": tlp - 1, "requests": n_dec}])
            t0 = other_s
        trace["layers_start_s"] = t0
        t = t0 + L * trace["layer_s"]
        t = self._fc_slices(head.kernels, t, it)
        if kv_step is not None:
            if kv_step.communication_s > 0:
                it.append(["link:kv-fetch", "kv-fetch-stall", t, kv_step.communication_s,
                           {"note": "offloaded KV fetch not hidden behind attention"}])
                t += kv_step.communication_s
            for label, nbytes, d in trace.get("kv_write", []):
                if d > 0:
                    it.append(["link:kv-write", "kv-write", t, d, {"tier": label,
                                                                   "bytes": nbytes}])
                    t += d
            if kv_step.migration_s > 0:
                it.append(["link:kv-migration", "kv-migration", 0.0, kv_step.migration_s,
                           {"bytes": trace.get("migrated_bytes", 0.0),
                            "exposed_s": max(0.0, kv_step.migration_s - t)}])
        trace["slices"] = it
        trace["serial_s"] = t

    def _kv_slices(
        self, layer: list[list[Any]], trace: dict[str, Any], kv_step: KVStep, t: float,
        attn_s: float, n_dec: int, ctx: dict[str, Any],
    ) -> None:
        """One layer's KV-tier attention from offset ``t``: each tier's local attention and, after
        it, its partial results' transfer to the merging device (in parallel across tiers);
        then the inter-device reduction, ending the layer's ``attn_s``; and an offloaded
        tier's fetch, alongside (its exposed part is drawn after the layers)."""
        L = self.model.n_layers
        merge = trace.get("merge_track", self.track_of(self.attn_group))
        tiers = trace.get("tiers", [])
        parts = kv_step.partials_by_tier_s or (0.0,) * len(kv_step.by_tier_s)
        for label, d, x in zip(tiers, kv_step.by_tier_s, parts, strict=False):
            d, x = d / L, x / L
            if d > 0:
                layer.append([f"tier:{label}", "attention", t, d,
                              {"tier": label, "requests": n_dec, **ctx}])
            if x > 0:
                layer.append(["link:kv-partials", "partials", t + d, x,
                              {"tier": label, "to": merge}])
        red = kv_step.reduction_s / L
        if red > 0:
            layer.append([merge, "attention-reduction", t + attn_s - red, red,
                          {"note": "inter-device reduction of the tiers' partial results "
                           "(PAMattention, on HBM-PIM's reduction units)"}])
        fetch = kv_step.fetch_s / L
        if fetch > 0:
            layer.append(["link:kv-fetch", "kv-fetch", t, min(fetch, attn_s),
                          {"fetch_us": fetch * 1e6, "note": "offloaded KV fetched to the GPU "
                           "(overlaps its attention; what outlasts it is kv-fetch-stall)"}])

    def _draft(self, n_dec: int, tlp: int) -> tuple[float, float]:
        """Draft model: ``tlp - 1`` sequential single-token passes on the GPUs (FC only)."""
        key = ("draft", n_dec)
        part = self._fc.get(key)
        if part is None:
            dm = self.draft_model
            assert dm is not None
            g = self.built.gpu or self.built.attention_group
            it = iteration(dm, BatchShape(np.ones(n_dec, dtype=np.int64),
                                          np.ones(n_dec, dtype=np.int64)), tp=1)
            c = Cost(0.0, 0.0)
            for k in it.fc:
                c = c + g.fc(k).scale(k.count)
            part = FCPart(float(c.time_s), float(c.energy_j), 0, 0, 0, 0, 0, ())
            self._fc[key] = part
        return part.time_s * (tlp - 1), part.energy_j * (tlp - 1)

    @property
    def fc_on_pim_available(self) -> bool:
        return PIM in self.built.fc_groups
