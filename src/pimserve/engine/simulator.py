"""The serving loop: requests -> batches -> iterations -> clock, energy, KV state.

Per iteration: admit requests (batching policy), split the running requests into prefill chunks
and decode steps, price the iteration (:mod:`pimserve.engine.pricing`), advance the clock,
sample how many tokens each decoding request produced (speculative acceptance), finish the
requests that reached their output length (RLP is recounted after every iteration, as PAPI's
runtime scheduler does), and free their KV.

State is a struct of numpy arrays over all requests; nothing loops over tokens in Python.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from pimserve.engine.calibration import calibrate_alpha
from pimserve.engine.config import RunConfig
from pimserve.engine.kv import KVHierarchy
from pimserve.engine.pricing import IterationPricer, StepCost
from pimserve.engine.result import RunResult, latency_quantiles, summary
from pimserve.engine.system import BuiltSystem
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.policies.fc_placement import FC_PLACEMENT
from pimserve.policies.speculation import SPECULATION, sample_tokens
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec
from pimserve.workload import Requests

PENDING, RUNNING, DONE, REJECTED = 0, 1, 2, 3


def _same_calibration(made_for: list[str], system: SystemSpec, model: ModelSpec) -> bool:
    """Whether an alpha calibrated for ``made_for`` = [system, model] applies: the same model
    (by name or alias) and either the same system name or the very devices, counts and
    parallelism of that system (a renamed copy)."""
    try:
        if load_model(made_for[1]).name != model.name:
            return False
        if made_for[0] == system.name:
            return True
        ref = load_system(made_for[0])
    except PimserveError:
        return False

    def shape(s: SystemSpec) -> tuple:
        return (tuple((g.role, g.device, g.count) for g in s.groups
                      if g.role in ("gpu", "fc_pim")), s.tensor_parallel)

    return shape(ref) == shape(system)


@functools.lru_cache(maxsize=64)
def _calibrate_cached(system_json: str, model_json: str) -> Any:
    return calibrate_alpha(SystemSpec.model_validate_json(system_json),
                           ModelSpec.model_validate_json(model_json))


def calibrate_alpha_cached(system: SystemSpec, model: ModelSpec) -> Any:
    """:func:`calibrate_alpha`, memoised by the system's and model's full specs."""
    return _calibrate_cached(system.model_dump_json(), model.model_dump_json())


#: the StepCost fields a run of iterations adds to the run's totals
_RUN_FIELDS = ("energy_j", "fc_gpu_s", "fc_pim_s", "attention_s", "communication_s", "other_s",
               "norms_s", "fc_gpu_flops", "fc_flops", "fc_gpu_j", "fc_pim_j", "attention_j",
               "communication_j", "other_j", "norms_j")


class Simulator:
    """One run of ``requests`` on ``system`` serving ``model`` with options ``cfg``."""

    def __init__(
        self,
        system: SystemSpec,
        model: ModelSpec,
        requests: Requests,
        cfg: RunConfig | None = None,
        workload_name: str = "",
    ):
        self.cfg = cfg = cfg or RunConfig()
        self.system, self.model, self.requests = system, model, requests
        self.workload_name = workload_name or requests.source
        self.warnings: list[str] = []
        self.built = BuiltSystem.build(system, model)
        policy = cfg.fc_placement or system.policies.fc_placement
        alpha = cfg.alpha or system.policies.alpha
        self.alpha_source = system.policies.alpha_source if alpha else ""
        made_for = system.policies.alpha_calibrated_for
        if (policy == "papi" and cfg.alpha is None and alpha is not None and made_for
                and not _same_calibration(made_for, system, model)):
            cal = calibrate_alpha_cached(system, model)
            self.warnings.append(
                f"alpha {alpha:g} was calibrated for system {made_for[0]} with model "
                f"{made_for[1]}; recalibrated for {system.name} with {model.name}: "
                f"{cal.alpha:g}"
            )
            alpha, self.alpha_source = cal.alpha, cal.how
        if policy == "papi" and alpha is None:
            cal = calibrate_alpha_cached(system, model)
            alpha, self.alpha_source = cal.alpha, cal.how
        self.policy_name, self.alpha = policy, alpha
        placement = FC_PLACEMENT.get(policy)(
            self.built.gpu is not None, bool(self.built.fc_groups.get("fc_pim")), alpha
        )
        self.speculation = SPECULATION.get(cfg.speculation)(cfg.tlp, cfg.acceptance, cfg.tlp_max)
        draft = load_model(cfg.draft_model) if cfg.draft_model else None
        if draft is not None and self.built.gpu is None:
            raise ConfigurationError("draft_model needs a system with a gpu group to run it")
        self.pricer = IterationPricer(self.built, placement, draft)
        self.rng = np.random.default_rng(cfg.seed)
        self.block_tokens = cfg.kv_block_tokens
        self.kvh: KVHierarchy | None = None
        pam_opts = [f for f in ("kv_x", "kv_y", "kv_mapping", "pamattention", "kv_scheduling",
                                "migration", "sparse_ratio")
                    if getattr(cfg, f) is not None]
        if pam_opts and not self.built.tiers:
            raise ConfigurationError(
                f"{', '.join(pam_opts)} set PAM's KV hierarchy, which system {system.name} does "
                "not have (it has no kv_tier groups); drop them or use a PAM system"
            )
        if cfg.alpha is not None and policy != "papi":
            raise ConfigurationError(
                f"alpha is PAPI's FC placement threshold; system {system.name} places FC "
                f"kernels with '{policy}', which has none (use fc_placement=papi)"
            )
        if self.built.tiers:
            self.kvh = KVHierarchy(self.built, model, cfg, self.rng, max_slots=cfg.batch,
                                   n_requests=len(requests))
            self.kv_blocks_total = self.kvh.capacity_blocks
        else:
            if cfg.kv_placement not in (None, "single-tier"):
                raise ConfigurationError(
                    f"kv_placement '{cfg.kv_placement}' needs a system with kv_tier groups; "
                    f"system {system.name} has one attention group (single-tier)"
                )
            self.kv_blocks_total = int(
                self.built.kv_capacity_bytes // (model.kv_bytes_per_token * self.block_tokens)
            )
        if self.kv_blocks_total < 1:
            raise ConfigurationError(
                f"system {system.name} has room for no KV block of {self.block_tokens} tokens"
            )
        if cfg.batching == "auto":
            self.batching = "static" if np.all(requests.arrival_s == 0) else "continuous"
        else:
            self.batching = cfg.batching
        self._expert_probs = self._router_probs()
        #: runs of decode-only iterations priced at once (:meth:`IterationPricer.decode_run`)
        #: where nothing but the contexts and the KV state changes between them: fixed TLP
        #: 1, no MoE routing, no draft model; with KV tiers, while the hierarchy's one-tier
        #: step applies (:meth:`KVHierarchy.decode_run` prices the steps, with the same
        #: draws of the locality model)
        self.fast_runs = (
            cfg.speculation == "fixed" and cfg.tlp == 1
            and (self.kvh is None or self.kvh.runs_possible)
            and self._expert_probs is None and cfg.draft_model is None
        )
        self.max_run = 4096  # iterations priced in one call (bounds the [run x batch] arrays)

    # ------------------------------------------------------------------ helpers
    def _router_probs(self) -> np.ndarray | None:
        m = self.model
        if not m.is_moe:
            return None
        if self.cfg.moe_router == "uniform":
            return np.full(m.n_experts, 1.0 / m.n_experts)
        w = 1.0 / np.arange(1, m.n_experts + 1) ** self.cfg.moe_skew
        return w / w.sum()

    def _route(self, m_tokens: int) -> tuple[int, ...] | None:
        """Tokens per expert for one layer: each token picks top-k distinct experts."""
        if self._expert_probs is None:
            return None
        k = self.model.experts_per_token
        keys = self.rng.random((m_tokens, self.model.n_experts)) ** (1.0 / self._expert_probs)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # weighted sampling w/o replacement
        return tuple(np.bincount(top.ravel(), minlength=self.model.n_experts).tolist())

    def _run_length(
        self, running: np.ndarray, pre_done: np.ndarray, pre_target: np.ndarray,
        rem: np.ndarray, kv: np.ndarray, static: bool, queue: deque,
        it_count: int, tl_lo: int, span: bool,
    ) -> int:
        """How many decode-only iterations from now can be priced as one run: all running
        requests decode (TLP 1), nothing can be admitted (static batch, empty queue or full
        batch), the KV fits every iteration (continuous batching), the iteration cap and
        the timeline window are not crossed. With ``span`` the run goes on while requests
        finish (each leaves after its last iteration, as after a step), up to the last
        one's end; without, it ends with the first iteration that finishes requests.
        ``rem``: the iterations each running request has left. Arrivals are checked by the
        caller on the priced times. 0 or 1: no run."""
        if not np.all(pre_done[running] >= pre_target[running]):
            return 0
        k = int(rem.max() if span else rem.min())  # the last one may finish requests
        cfg = self.cfg
        if cfg.max_iterations is not None:
            k = min(k, cfg.max_iterations - it_count - 1)
        if 0 <= it_count < tl_lo:
            k = min(k, tl_lo - it_count)
        k = min(k, self.max_run)
        if k < 2:
            return 0
        if not static:
            if queue and running.size < cfg.batch:
                return 0  # admission is attempted every iteration
            # KV blocks of iteration j: blocks(kv + 1 + j) summed over the requests still
            # decoding; the largest j that fits
            base = kv[running] + 1
            last = int(self._blocks(base + (k - 1)).sum())
            if last > self.kv_blocks_total:
                js = np.arange(k, dtype=np.int64)
                blk = self._blocks(base[None, :] + js[:, None])
                if span:
                    blk *= js[:, None] < rem[None, :]
                need = blk.sum(axis=1)
                over = np.flatnonzero(need > self.kv_blocks_total)
                k = int(over[0]) if over.size else k
        return k if k >= 2 else 0

    def _apply_run(
        self, run: dict[str, np.ndarray], k: int, starts: np.ndarray, rlp: np.ndarray,
        acc: StepCost, steps: dict[str, list] | None, kv_used: list[int] | None = None,
    ) -> float:
        """Account the first ``k`` iterations of ``run`` as :meth:`run`'s loop would, one
        after another (``np.cumsum`` adds in the same order as the loop); returns the new
        time. ``rlp``: the requests decoding at each iteration (one token each);
        ``kv_used``: the first KV tier's blocks after each iteration (KV tiers)."""
        fields = _RUN_FIELDS
        tab = np.empty((len(fields), k + 1))
        for i, f in enumerate(fields):
            tab[i, 0] = getattr(acc, f)
            tab[i, 1:] = run[f][:k]
        tot = np.cumsum(tab, axis=1)[:, -1]  # row-wise, left to right: the loop's order
        for i, f in enumerate(fields):
            setattr(acc, f, float(tot[i]))
        if steps is not None:
            n = rlp[:k].tolist()
            steps["start_s"].extend(starts[:k].tolist())
            steps["time_s"].extend(run["time_s"][:k].tolist())
            steps["rlp"].extend(n)
            steps["prefill_tokens"].extend([0] * k)
            steps["tlp"].extend([1] * k)
            for f in ("fc_gpu_s", "fc_pim_s", "attention_s", "communication_s"):
                steps[f].extend(run[f][:k].tolist())
            steps["tokens"].extend(n)
            kvh = self.kvh
            if kvh is not None and kv_used is not None:
                bb = kvh.block_bytes
                for i, t in enumerate(kvh.tiers):
                    steps[f"kv_bytes_{t.label}"].extend(
                        [u * bb for u in kv_used[:k]] if i == 0 else [t.used * bb] * k)
        return float(starts[k])

    def _finish(
        self, running: np.ndarray, gen: np.ndarray, out: np.ndarray, status: np.ndarray,
        t_done: np.ndarray, kv: np.ndarray, now: float | None, finished: int,
        total_live: int, progress: Callable[[int, int], None] | None,
    ) -> tuple[np.ndarray, int]:
        """Finish the running requests that reached their output length at time ``now`` (s;
        None: their ``t_done`` is set already): mark them done, free their KV; returns the
        still running ones and the new count of finished requests."""
        done_mask = gen[running] >= out[running]
        if not done_mask.any():
            return running, finished
        fin = running[done_mask]
        status[fin] = DONE
        if now is not None:
            t_done[fin] = now
        kv[fin] = 0
        if self.kvh is not None:
            self.kvh.release(fin)
        finished += fin.size
        if progress is not None:
            progress(finished, total_live)
        return running[~done_mask], finished

    def _blocks(self, tokens: np.ndarray) -> np.ndarray:
        return -(-tokens // self.block_tokens)

    # ------------------------------------------------------------------ the loop
    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        """Serve every request; ``progress(finished, total)`` is called now and then."""
        wall0 = time.perf_counter()
        cfg, model, req = self.cfg, self.model, self.requests
        n = len(req)
        arrival = np.asarray(req.arrival_s, dtype=np.float64)
        prompt = np.asarray(req.prompt_tokens, dtype=np.int64).copy()
        out = np.asarray(req.output_tokens, dtype=np.int64)
        status = np.zeros(n, dtype=np.int8)
        reasons: dict[str, int] = {}
        truncated = 0

        # requests that can never run are rejected and reported, never dropped silently
        too_long = prompt + out > model.max_context
        if too_long.any():
            if cfg.long_context == "allow":
                longest = int((prompt + out)[too_long].max())
                self.warnings.append(
                    f"{int(too_long.sum())} requests run beyond the model's trained context of "
                    f"{model.max_context} tokens (long_context=allow; longest {longest} tokens): "
                    "their cost is priced, their quality is not"
                )
            elif cfg.long_context == "truncate":
                new_prompt = model.max_context - out
                bad = too_long & (new_prompt < 1)
                fix = too_long & ~bad
                prompt[fix] = new_prompt[fix]
                truncated = int(fix.sum())
                status[bad] = REJECTED
                if bad.any():
                    reasons["output_exceeds_context"] = int(bad.sum())
                    self.warnings.append(
                        f"{int(bad.sum())} requests rejected: their output alone reaches the "
                        f"model's context of {model.max_context} tokens, so no prompt "
                        "truncation fits them (long_context=truncate)"
                    )
                if truncated:
                    self.warnings.append(
                        f"{truncated} prompts truncated to fit the model's context of "
                        f"{model.max_context} tokens"
                    )
            else:
                status[too_long] = REJECTED
                reasons["exceeds_context"] = int(too_long.sum())
                self.warnings.append(
                    f"{int(too_long.sum())} requests rejected: prompt + output exceed the "
                    f"model's context of {model.max_context} tokens (use long_context=truncate, or "
                    "allow to run them beyond it)"
                )
        need_blocks = self._blocks(prompt + out)
        no_fit = (status == PENDING) & (need_blocks > self.kv_blocks_total)
        if no_fit.any():
            status[no_fit] = REJECTED
            reasons["exceeds_kv_capacity"] = int(no_fit.sum())
            self.warnings.append(
                f"{int(no_fit.sum())} requests rejected: their KV cannot fit the system's "
                f"{self.built.kv_capacity_bytes / 1e9:.1f} GB of KV capacity"
            )
        if self.batching == "static":
            ok = status == PENDING
            if ok.any():
                mean_need = float(need_blocks[ok].mean())
                fits = int(self.kv_blocks_total // max(mean_need, 1))
                if min(cfg.batch, int(ok.sum())) > fits:
                    need_gb = (
                        cfg.batch * mean_need * self.block_tokens * model.kv_bytes_per_token / 1e9
                    )
                    raise ConfigurationError(
                        f"batch {cfg.batch} needs about {need_gb:.1f} GB "
                        f"of KV for its requests' full lengths, but system {self.system.name} "
                        f"has {self.built.kv_capacity_bytes / 1e9:.1f} GB; at most about {fits} "
                        "such requests fit (lower --batch)"
                    )

        gen = np.zeros(n, dtype=np.int64)
        kv = np.zeros(n, dtype=np.int64)  # tokens in the KV cache
        pre_done = np.zeros(n, dtype=np.int64)
        pre_target = prompt.copy()
        t_first = np.full(n, np.nan)
        t_done = np.full(n, np.nan)
        order = np.argsort(arrival, kind="stable")
        order = order[status[order] == PENDING]
        queue: deque[int] = deque()
        next_ptr = 0
        running = np.empty(0, dtype=np.int64)
        reserved = 0  # static batching: KV blocks reserved for the running batch
        now = 0.0
        it_count = 0
        preemptions = 0
        kv_limited_batches = 0
        acc = StepCost()
        rlp_sum = tlp_sum = 0
        dec_only_s, dec_only_tok = 0.0, 0  # iterations without prefill (generation phase)
        finished = 0
        total_live = len(order)
        static = self.batching == "static"
        kvh = self.kvh
        kv_tok_sum = 0
        pending = None  # the last run of KV steps, for its next step (KVRun.take_step)
        last_dec_s = 0.0  # the last decode-only iteration's time (s): how long KV runs are priced
        steps: dict[str, list] | None = None
        if cfg.record_steps:
            steps = {k: [] for k in ("start_s", "time_s", "rlp", "prefill_tokens", "tlp",
                                     "fc_gpu_s", "fc_pim_s", "attention_s", "communication_s",
                                     "tokens")}
            if kvh is not None:
                for t in kvh.tiers:
                    steps[f"kv_bytes_{t.label}"] = []
        # timeline: iterations tl_lo .. tl_hi - 1 record their schedule (nothing otherwise)
        tl_lo, tl_hi = cfg.timeline_steps or (-1, -1)
        timeline: list[dict] = []

        while True:
            while next_ptr < len(order) and arrival[order[next_ptr]] <= now:
                queue.append(int(order[next_ptr]))
                next_ptr += 1
            # ---- admission
            admitted = False  # requests admitted now prefill first: no run of decode steps
            if static:
                if running.size == 0:
                    short = cfg.batch - len(queue)
                    if short > 0 and next_ptr < len(order):
                        now = max(now, float(arrival[order[min(next_ptr + short, len(order)) - 1]]))
                        continue
                    batch: list[int] = []
                    reserved = 0
                    while queue and len(batch) < cfg.batch:
                        i = queue[0]
                        if reserved + need_blocks[i] > self.kv_blocks_total:
                            kv_limited_batches += 1
                            break
                        reserved += int(need_blocks[i])
                        batch.append(queue.popleft())
                    if batch:
                        running = np.asarray(batch, dtype=np.int64)
                        status[running] = RUNNING
                        admitted = True
            else:
                if queue and running.size < cfg.batch:
                    used = int(self._blocks(kv[running] + 1).sum()) if running.size else 0
                    new = []
                    while queue and running.size + len(new) < cfg.batch:
                        i = queue[0]
                        nb = int(self._blocks(np.int64(pre_target[i] + 1)))
                        if used + nb > self.kv_blocks_total:
                            break
                        used += nb
                        new.append(queue.popleft())
                    if new:
                        running = np.concatenate([running, np.asarray(new, dtype=np.int64)])
                        status[new] = RUNNING
                        admitted = True
            if running.size == 0:
                if not queue and next_ptr >= len(order):
                    break
                if next_ptr < len(order):
                    now = max(now, float(arrival[order[next_ptr]]))
                    continue
                raise AssertionError("queued requests can never be admitted")  # pragma: no cover

            # ---- a run of decode-only iterations priced at once, where nothing but the
            # context lengths changes between them (then one iteration at a time, below)
            if self.fast_runs and not admitted and (tl_hi <= it_count or it_count + 2 <= tl_lo
                                                    or tl_lo < 0):
                # (a KV run goes on while requests finish, unless one finishing lets a
                # queued request in)
                span = kvh is not None and (static or (not queue and running.size < cfg.batch))
                rem = out[running] - gen[running]  # iterations each request has left
                k = self._run_length(running, pre_done, pre_target, rem, kv, static, queue,
                                     it_count, tl_lo, span)
                arriving = not static and running.size < cfg.batch and next_ptr < len(order)
                kv_run = None
                if k >= 2 and kvh is not None:
                    if arriving and last_dec_s > 0:
                        # price about as many KV steps as start before the next arrival, by
                        # the last decode-only iteration's time; none where the arrival
                        # likely comes within the first (any choice gives the same results:
                        # steps priced past the arrival are dropped, a run cut short goes on
                        # at the next pass)
                        ahead = (float(arrival[order[next_ptr]]) - now) / last_dec_s
                        k = min(k, int(ahead) + 2) if ahead >= 1.0 else 0
                    if k >= 2:
                        kv_run = kvh.decode_run(running, kv[running] + 1, 1, k,
                                                rem - 1 if span else None)
                        k = 0 if kv_run is None else kv_run.k
                if k >= 2:
                    # requests decoding at each iteration (fewer as they finish)
                    shrinks = int(rem.min()) < k
                    if shrinks:
                        rlp = running.size - np.bincount(np.minimum(rem, k), minlength=k + 1)[
                            :k].cumsum()
                    else:
                        rlp = np.full(k, running.size)
                    run = self.pricer.decode_run(
                        kv[running] + 1, 1, k,
                        None if kv_run is None else (kv_run.attention_s, kv_run.attention_j),
                        rlp if shrinks else None)
                    times = run["time_s"]
                    starts = np.cumsum(np.concatenate(([now], times)))
                    if arriving:
                        # an arrival queues at the first iteration starting at or after it
                        t_a = float(arrival[order[next_ptr]])
                        k = min(k, int(np.searchsorted(starts[:k], t_a, side="left")))
                    if kv_run is not None:
                        kv_run.commit(k if k >= 2 else 0)
                        pending = kv_run  # its next step may be the next iteration's
                    if k >= 2:
                        last_dec_s = float(times[k - 1])
                        now = self._apply_run(run, k, starts, rlp, acc, steps,
                                              None if kv_run is None else kv_run.used)
                        n_run = running.size
                        tokens = int(rlp[:k].sum()) if shrinks else n_run * k
                        rlp_sum += tokens
                        tlp_sum += tokens
                        dec_only_s = float(np.cumsum(np.concatenate(([dec_only_s],
                                                                     times[:k])))[-1])
                        dec_only_tok += tokens
                        it_count += k
                        if not shrinks:  # every request decoded k tokens
                            kv_tok_sum += k * int(kv[running].sum()) + n_run * k * (k - 1) // 2
                            kv[running] += k
                            gen[running] += k
                            running, finished = self._finish(running, gen, out, status, t_done,
                                                             kv, now, finished, total_live,
                                                             progress)
                            continue
                        c = np.minimum(rem, k)  # iterations each request decoded
                        kv_tok_sum += int((c * kv[running] + c * (c - 1) // 2).sum())
                        kv[running] += c
                        gen[running] += c
                        # requests finish at the end of their last iteration (those that
                        # finished before the run's last were released by the commit)
                        ends = rem <= k
                        t_done[running[ends]] = starts[rem[ends]]
                        running, finished = self._finish(running, gen, out, status, t_done,
                                                         kv, None, finished, total_live,
                                                         progress)
                        continue

            # ---- this iteration's work
            tlp = self.speculation.tlp()

            def split(running: np.ndarray, tlp: int = tlp) -> tuple[Any, ...]:
                """(prefilling, decoding, prefill chunk sizes, KV blocks the step needs, the
                decoding requests' context this step (tokens) and their KV blocks)."""
                in_pre = pre_done[running] < pre_target[running]
                pre, dec = running[in_pre], running[~in_pre]
                chunks = pre_target[pre] - pre_done[pre]
                if cfg.prefill_chunk is not None:
                    chunks = np.minimum(chunks, cfg.prefill_chunk)
                dec_ctx = kv[dec] + tlp
                dec_blocks = self._blocks(dec_ctx)
                need = int(dec_blocks.sum()) + int(self._blocks(kv[pre] + chunks).sum())
                return pre, dec, chunks, need, dec_ctx, dec_blocks

            pre, dec, chunks, need, dec_ctx, dec_blocks = split(running)
            if not static and dec.size:
                # continuous batching: preempt (recompute) the newest requests until KV fits
                while need > self.kv_blocks_total and running.size > 1:
                    victim = int(running[-1])
                    running = running[:-1]
                    status[victim] = PENDING
                    kv[victim] = 0
                    if kvh is not None:
                        kvh.release(np.asarray([victim]))
                    pre_done[victim] = 0
                    pre_target[victim] = prompt[victim] + gen[victim]
                    queue.appendleft(victim)
                    preemptions += 1
                    pre, dec, chunks, need, dec_ctx, dec_blocks = split(running)
            m_tok = dec.size * tlp + int(chunks.sum())
            kv_step = None
            kv_write_s = 0.0
            trace = {} if tl_lo <= it_count < tl_hi else None
            if trace is not None and kvh is not None:
                kv_before = (kvh.written_bytes.copy(), kvh.migrated_bytes)
            if kvh is not None:
                # the decoding requests' step (their new blocks reserved first), taken from
                # the last run of steps where it priced this very step; then the prefill
                # chunks' blocks (mapped on the activations up to this step)
                if pending is not None and tlp == 1:
                    kv_step = pending.take_step(dec, dec_ctx)
                pending = None
                written0 = kvh.written_bytes.copy() if pre.size else None
                if kv_step is None:
                    kv_step = kvh.step(dec, dec_ctx, tlp, reserve=True, blocks=dec_blocks)
                kv_write_s = kv_step.write_s
                if pre.size:
                    kvh.reserve(pre, kv[pre] + chunks, in_last_step=True)
                    kv_write_s = kvh.write_time_since(written0)
                if trace is not None:
                    trace.update(self._kv_trace(*kv_before, kv_write_s))
            cost = self.pricer.step(
                dec_ctx, tlp, chunks, pre_done[pre] + chunks, self._route(m_tok),
                kv_step, kv_write_s, trace,
            )
            if not cost.time_s > 0:
                raise AssertionError(f"iteration priced at {cost.time_s} s")  # pragma: no cover
            if trace is not None:
                timeline.append(self._timeline_entry(trace, it_count, now, cost.time_s,
                                                     int(dec.size), tlp, chunks))
            if steps is not None:
                steps["start_s"].append(now)
                steps["time_s"].append(cost.time_s)
                steps["rlp"].append(int(dec.size))
                steps["prefill_tokens"].append(int(chunks.sum()))
                steps["tlp"].append(tlp)
                steps["fc_gpu_s"].append(cost.fc_gpu_s)
                steps["fc_pim_s"].append(cost.fc_pim_s)
                steps["attention_s"].append(cost.attention_s)
                steps["communication_s"].append(cost.communication_s)
                if kvh is not None:
                    for t in kvh.tiers:
                        steps[f"kv_bytes_{t.label}"].append(t.used * kvh.block_bytes)
            now += cost.time_s
            it_count += 1
            acc.energy_j += cost.energy_j
            acc.fc_gpu_s += cost.fc_gpu_s
            acc.fc_pim_s += cost.fc_pim_s
            acc.attention_s += cost.attention_s
            acc.communication_s += cost.communication_s
            acc.other_s += cost.other_s
            acc.norms_s += cost.norms_s
            acc.fc_gpu_flops += cost.fc_gpu_flops
            acc.fc_flops += cost.fc_flops
            acc.fc_gpu_j += cost.fc_gpu_j
            acc.fc_pim_j += cost.fc_pim_j
            acc.attention_j += cost.attention_j
            acc.communication_j += cost.communication_j
            acc.other_j += cost.other_j
            acc.norms_j += cost.norms_j
            rlp_sum += dec.size
            decode_only = pre.size == 0
            if decode_only:
                dec_only_s += cost.time_s
                last_dec_s = cost.time_s
            kv_tok_sum += int(kv[running].sum())
            tlp_sum += dec.size * tlp

            # ---- state updates
            if steps is not None:
                gen_before = int(gen[running].sum())
            if pre.size:
                pre_done[pre] += chunks
                kv[pre] += chunks
                fin = pre[pre_done[pre] >= pre_target[pre]]
                gen[fin] += 1  # the prefill pass produces the next token
                first = fin[np.isnan(t_first[fin])]
                t_first[first] = now
            if dec.size:
                produced = sample_tokens(self.rng, self.speculation.p, tlp, dec.size)
                self.speculation.observe(dec.size * tlp, int(produced.sum()), dec.size)
                produced = np.minimum(produced, out[dec] - gen[dec])
                gen[dec] += produced
                kv[dec] += produced
                if decode_only:
                    dec_only_tok += int(produced.sum())
            if steps is not None:
                steps["tokens"].append(int(gen[running].sum()) - gen_before)
            running, finished = self._finish(running, gen, out, status, t_done, kv, now,
                                             finished, total_live, progress)
            if cfg.max_iterations is not None and it_count >= cfg.max_iterations:
                self.warnings.append(f"stopped after max_iterations={cfg.max_iterations}")
                break

        if kv_limited_batches:
            self.warnings.append(
                f"{kv_limited_batches} static batches were cut short because their requests' "
                "KV would not fit"
            )
        self._kv_mean_bytes = kv_tok_sum / max(it_count, 1) * model.kv_bytes_per_token
        tl_record = self._timeline(timeline, it_count) if cfg.timeline_steps else None
        result = self._result(
            status, gen, out, arrival, t_first, t_done, reasons, truncated, preemptions,
            it_count, now, acc, rlp_sum, tlp_sum, time.perf_counter() - wall0,
        )
        result.decode_time_s = dec_only_s
        result.decode_throughput_tok_s = dec_only_tok / dec_only_s if dec_only_s > 0 else 0.0
        if steps is not None:
            result.extra["steps"] = steps
        if tl_record is not None:
            result.extra["timeline"] = tl_record
        if kvh is not None:
            summ = kvh.summary()
            result.extra["kv_peak_bytes_by_tier"] = summ["kv_peak_bytes_by_tier"]
            result.extra["kv_policy"] = summ["kv_policy"]
        return result

    # ------------------------------------------------------------------ timeline
    def _kv_trace(self, written0: np.ndarray, migrated0: float, kv_write_s: float) -> dict:
        """What the pricer's trace needs from the KV hierarchy for one step (timeline only):
        tier labels, new KV written to each lower tier (``[tier, bytes, s]``, the seconds
        sharing ``kv_write_s`` by each tier's link time), migrated bytes and where partial
        attention results merge."""
        kvh = self.kvh
        assert kvh is not None
        labels = [t.label for t in kvh.tiers]
        writes = []
        for k in range(1, kvh.n_tiers):
            nb = float(kvh.written_bytes[k] - written0[k])
            if nb > 0:
                writes.append([labels[k], nb, kvh.tiers[k].link_time(nb)])
        total = sum(w[2] for w in writes)
        for w in writes:  # the engine's sum, split in proportion (identical up to rounding)
            w[2] = kv_write_s * w[2] / total if total > 0 else 0.0
        first = f"tier:{labels[0]}"
        return {
            "tiers": labels,
            "kv_write": writes,
            "migrated_bytes": float(kvh.migrated_bytes - migrated0),
            "merge_track": first if kvh.pamattention or self.built.gpu is None else "gpu",
        }

    @staticmethod
    def _timeline_entry(trace: dict, index: int, start_s: float, time_s: float, rlp: int,
                        tlp: int, chunks: np.ndarray) -> dict:
        """One iteration of the timeline record (plain data; see :meth:`_timeline`)."""
        return {
            "index": index,
            "start_s": start_s,
            "time_s": time_s,
            "rlp": rlp,
            "tlp": tlp,
            "prefill_requests": int(chunks.size),
            "prefill_tokens": int(chunks.sum()),
            "layers_start_s": trace.get("layers_start_s", 0.0),
            "layer_s": trace.get("layer_s", 0.0),
            "layer": trace.get("layer", []),
            "slices": trace.get("slices", []),
        }

    def _timeline_tracks(self) -> dict[str, str]:
        """Timeline track ids -> names, in display order: the iterations, each device group,
        then the links."""
        b = self.built
        tracks = {"iteration": "Iterations"}
        if b.gpu is not None:
            tracks["gpu"] = f"GPU ({b.gpu.name})"
        if b.fc_pim is not None:
            tracks["fc_pim"] = f"FC-PIM ({b.fc_pim.name})"
        if b.attn is not None:
            tracks["attn"] = f"Attn-PIM ({b.attn.name})"
        if self.kvh is not None:
            for t in self.kvh.tiers:
                what = "KV tier" if t.compute else "KV tier (memory only)"
                tracks[f"tier:{t.label}"] = f"{what} {t.label} ({t.group.name})"
        g = b.attention_group
        if g.link is not None:
            tracks["link:attn"] = (f"Link FC side <-> attention ({g.count}x "
                                   f"{g.link.spec.name})")
        if b.spec.tensor_parallel > 1:
            tracks["link:allreduce"] = (f"Link tensor-parallel all-reduce "
                                        f"(TP {b.spec.tensor_parallel})")
        if self.kvh is not None and self.kvh.n_tiers > 1:
            if any(t.group.link is not None for t in self.kvh.tiers[1:]):
                tracks["link:kv-write"] = "Link KV writes to lower tiers"
            if any(not t.compute for t in self.kvh.tiers):
                tracks["link:kv-fetch"] = "Link KV fetch (offloaded tiers)"
            if self.kvh.scheduling:
                tracks["link:kv-migration"] = "Link KV migration (between tiers)"
        kvh = self.kvh
        if kvh is not None and (any(t.compute and t.group.link is not None for t in kvh.tiers)
                                or (kvh.sparse and not kvh.pamattention)):
            # (over a tier's link, or, fixed tiling's sparse reads, over HBM-PIM's own I/O)
            tracks["link:kv-partials"] = "Link attention partial results (tiers -> merge)"
        return tracks

    def _timeline(self, iterations: list[dict], it_count: int) -> dict:
        """The timeline record: plain data that :mod:`pimserve.report.timeline` turns into a
        trace. ``iterations[i]`` holds the iteration's start and time (s), RLP, TLP, prefill
        work, and its slices ``[track, name, offset s, duration s, args]``: ``layer`` for one
        decoder layer (offsets from the layer's start; ``n_layers`` alike layers of
        ``layer_s`` each run from ``layers_start_s``) and ``slices`` for the rest (offsets
        from the iteration's start)."""
        assert self.cfg.timeline_steps is not None
        a, b = self.cfg.timeline_steps
        if a >= it_count:
            self.warnings.append(
                f"timeline window {a}:{b} starts after the run's {it_count} iterations; the "
                "timeline is empty"
            )
        return {
            "system": self.system.name,
            "model": self.model.name,
            "window": [a, min(b, it_count)],
            "n_layers": self.model.n_layers,
            "tracks": self._timeline_tracks(),
            "iterations": iterations,
        }

    # ------------------------------------------------------------------ results
    def _result(self, status, gen, out, arrival, t_first, t_done, reasons, truncated,
                preemptions, iterations, now, acc: StepCost, rlp_sum, tlp_sum,
                wall_s) -> RunResult:
        done = status == DONE
        tokens = int(gen.sum())
        multi = done & (out > 1)
        tpot = (t_done[multi] - t_first[multi]) / (out[multi] - 1)
        breakdown = {
            "fc_gpu": acc.fc_gpu_s,
            "fc_pim": acc.fc_pim_s,
            "attention": acc.attention_s,
            "communication": acc.communication_s,
            "norms": acc.norms_s,
            "other": acc.other_s,
        }
        energy = {
            "fc_gpu": acc.fc_gpu_j,
            "fc_pim": acc.fc_pim_j,
            "attention": acc.attention_j,
            "communication": acc.communication_j,
            "norms": acc.norms_j,
            "other": acc.other_j,
        }
        cfg = self.cfg.model_dump()
        cfg.update(batching=self.batching, fc_placement=self.policy_name, alpha=self.alpha,
                   alpha_source=self.alpha_source)
        slo = self._slo(done, out, arrival, t_first, t_done, gen, now)
        return RunResult(
            system=self.system.name,
            model=self.model.name,
            workload=self.workload_name,
            requests_total=len(status),
            requests_completed=int(done.sum()),
            requests_rejected=int((status == REJECTED).sum()),
            requests_running=int((status == RUNNING).sum()),
            requests_waiting=int((status == PENDING).sum()),
            rejected_reasons=reasons,
            truncated_prompts=truncated,
            preemptions=preemptions,
            output_tokens=tokens,
            iterations=iterations,
            simulated_time_s=now,
            throughput_tok_s=tokens / now if now > 0 else 0.0,
            ttft_ms=summary(t_first[done] - arrival[done], 1e3),
            tpot_ms=summary(tpot, 1e3),
            latency_s=summary(t_done[done] - arrival[done]),
            energy_j=acc.energy_j,
            energy_per_token_j=acc.energy_j / tokens if tokens else math.nan,
            time_breakdown_s=breakdown,
            energy_breakdown_j=energy,
            fc_on_gpu_fraction=acc.fc_gpu_flops / acc.fc_flops if acc.fc_flops else 0.0,
            mean_rlp=rlp_sum / iterations if iterations else 0.0,
            mean_tlp=tlp_sum / rlp_sum if rlp_sum else 0.0,
            wall_time_s=wall_s,
            config=cfg,
            warnings=list(self.warnings),
            extra={"kv_capacity_gb": self.kv_blocks_total * self.block_tokens
                   * self.model.kv_bytes_per_token / 1e9,
                   "kv_blocks_total": self.kv_blocks_total,
                   "latency_quantiles": latency_quantiles(
                       ttft_ms=(t_first[done] - arrival[done]) * 1e3, tpot_ms=tpot * 1e3,
                       latency_s=t_done[done] - arrival[done])},
            **slo,
            **self._kv_fields(acc),
        )

    def _slo(self, done: np.ndarray, out: np.ndarray, arrival: np.ndarray,
             t_first: np.ndarray, t_done: np.ndarray, gen: np.ndarray, now: float) -> dict:
        """SLO attainment (share of all requests, rejected and unfinished ones counting as
        misses, that completed within the TTFT and TPOT SLOs) and goodput (those requests
        per second and their output tokens per second), as vLLM's benchmarks define them.
        Empty without SLOs."""
        ttft_slo, tpot_slo = self.cfg.ttft_slo_ms, self.cfg.tpot_slo_ms
        if ttft_slo is None and tpot_slo is None:
            return {}
        ok = done.copy()
        if ttft_slo is not None:
            ok &= np.where(done, (t_first - arrival) * 1e3 <= ttft_slo, False)
        if tpot_slo is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                tpot_ms = np.where(out > 1, (t_done - t_first) / np.maximum(out - 1, 1), 0.0)
            ok &= np.where(done, tpot_ms * 1e3 <= tpot_slo, False)
        n = int(ok.sum())
        return {"slo_attainment": n / len(done) if len(done) else None,
                "goodput_req_s": n / now if now > 0 else 0.0,
                "goodput_tok_s": float(gen[ok].sum()) / now if now > 0 else 0.0}

    def _kv_fields(self, acc: StepCost) -> dict:
        """KV-hierarchy result fields; one-group systems report their attention group."""
        if self.kvh is None:
            label = self.built.attention_group.role
            return {
                "kv_bytes_by_tier": {label: self._kv_mean_bytes},
                "attention_time_by_tier_s": {label: acc.attention_s},
                "migrated_bytes": 0.0,
                "sparse_read_fraction": 1.0,
            }
        s = self.kvh.summary()
        return {k: s[k] for k in ("kv_bytes_by_tier", "attention_time_by_tier_s",
                                  "migrated_bytes", "sparse_read_fraction")}
