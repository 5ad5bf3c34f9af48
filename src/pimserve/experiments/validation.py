"""Kernel models against cycle-level reference data (``pimserve validate attacc``).

The reference is the AttAcc simulator (scale-snu/attacc_simulator) on its pinned Ramulator 2
with AttAcc's PIM patches, for LLaMA-65B on 8 A100 (tensor parallel 8) and 40 HBM3-PIM stacks.
Two CSV files, read from a folder the user names:

- ``pim_attention_per_layer_per_stack.csv``: one Ramulator run per row, the decode attention of
  one layer (score, softmax, context) on one stack holding ``nhead`` (request, head) pairs at
  context ``L``, for bank-level (BA), bank-group-level (BG) and buffer-die (BUFFER) PIM, with
  and without the power limit. pimserve prices the same layer on a group of 40 stacks serving
  ``batch`` requests, the batch whose pairs give that ``nhead`` per stack, and compares one
  layer's time.
- ``end_to_end_llama65b.csv``: AttAcc ``main.py`` rows; the GPU-only rows (``hw = NONE``) give
  ``g_matmul``, GPU attention per decode step (all 80 layers, averaged over the ``Lout - 1``
  steps at contexts ``Lin + 1 .. Lin + Lout - 1``), compared with pimserve's GPU attention on 8
  GPUs with the KV heads split over them.

Every point is computed by the same code the engine uses (:meth:`GroupModel.layer_attention`);
nothing is fitted to the reference. Errors are summarised as geometric means of
``|log(pimserve / reference)|`` per section, reported as a percentage.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.hardware.cost import cost_model_for
from pimserve.hardware.group import GroupModel
from pimserve.ops.kernels import AttentionKernel
from pimserve.specs.catalog import load_device, load_model
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec
from pimserve.workload.request import Requests

PIM_FILE = "pim_attention_per_layer_per_stack.csv"
E2E_FILE = "end_to_end_llama65b.csv"

#: (AttAcc pim_type, power limit) -> pimserve device preset
ATTACC_DEVICES: dict[tuple[str, bool], str] = {
    ("BA", False): "hbm3-attacc-1p1b",
    ("BA", True): "hbm3-attacc-1p1b-pl",
    ("BG", False): "hbm3-attacc-bg",
    ("BG", True): "hbm3-attacc-bg-pl",
    ("BUFFER", False): "hbm3-attacc-buffer",
    ("BUFFER", True): "hbm3-attacc-buffer",  # the power limit does not pace buffer-die MACs
}
ATTACC_STACKS = 40  # 8 AttAcc boxes x 5 HBM3-PIM stacks
ATTACC_GPUS = 8  # 8 A100, tensor parallel 8
ATTACC_GPU = "a100-hbm3"  # AttAcc's A100a
ATTACC_MODEL = "llama-65b"
ATTACC_SUBBATCHES = 8  # AttAcc src/system.py _pipeline: minimum_ratio = 1 / (heads / GPUs)


@dataclass
class Point:
    """One reference point next to pimserve's value (seconds)."""

    section: str
    point: str
    reference_s: float
    pimserve_s: float

    @property
    def ratio(self) -> float:
        return self.pimserve_s / self.reference_s

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Validation:
    """All points, and the geometric-mean and worst errors per section (fractions)."""

    points: list[Point] = field(default_factory=list)

    def sections(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        names = list(dict.fromkeys(p.section for p in self.points))
        pim = [n for n in names if n.startswith("PIM attention (")]
        if len(pim) > 1:
            names.insert(names.index(pim[-1]) + 1, "PIM attention (all)")
        for name in names:
            logs = np.abs(np.log([p.ratio for p in self.points
                                  if p.section == name or (name == "PIM attention (all)"
                                                           and p.section in pim)]))
            out[name] = {
                "points": float(logs.size),
                "gmean_error": float(np.exp(logs.mean()) - 1.0),
                "max_error": float(np.exp(logs.max()) - 1.0),
            }
        return out

    def to_dict(self) -> dict[str, object]:
        return {"points": [p.to_dict() for p in self.points], "sections": self.sections()}


def default_data_dir() -> str:
    """Where the reference CSVs are looked for without ``--data``:
    ``$PIMSERVE_VALIDATION_DATA/attacc``, else ``./validation/attacc``."""
    import os

    root = os.environ.get("PIMSERVE_VALIDATION_DATA")
    return os.path.join(root, "attacc") if root else os.path.join("validation", "attacc")


def _read_csv(folder: Path, name: str) -> list[dict[str, str]]:
    path = folder / name
    if not path.is_file():
        raise ConfigurationError(
            f"no AttAcc reference file {name} in {folder}: pass --data DIR, the folder holding "
            f"{PIM_FILE} and {E2E_FILE}"
        )
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigurationError(f"{path}: no rows")
    return rows


def _field(row: dict[str, str], key: str, path: str, line: int) -> str:
    if key not in row or row[key] in (None, ""):
        raise ConfigurationError(f"{path}, line {line}: column '{key}' is missing or empty")
    return row[key]


def batch_for_pairs_per_stack(nhead: int, n_heads: int, stacks: int) -> int:
    """The batch whose ``batch x n_heads`` pairs put ``nhead`` on each of ``stacks`` stacks
    (AttAcc: ``nhead = ceil(batch x n_heads / stacks)``); the smallest such batch."""
    b = max(1, math.floor((nhead - 1) * stacks / n_heads) + 1)
    if math.ceil(b * n_heads / stacks) != nhead:
        raise ConfigurationError(
            f"no batch puts {nhead} (request, head) pairs on each of {stacks} stacks for a "
            f"model with {n_heads} heads"
        )
    return b


def layer_kernels(model: ModelSpec, batch: int, context: int) -> list[AttentionKernel]:
    """One decode layer's attention kernels for ``batch`` requests at ``context`` tokens."""
    q = np.ones(batch, dtype=np.int64)
    c = np.full(batch, context, dtype=np.int64)
    return [AttentionKernel(op, q, c, model.n_heads, model.n_kv_heads, model.head_dim, 1,
                            model.dtype_bytes) for op in ("score", "softmax", "context")]


def pim_attention_points(rows: list[dict[str, str]], model: ModelSpec) -> list[Point]:
    """PIM attention per layer per stack: reference latency against pimserve's layer time."""
    pts = []
    groups: dict[str, GroupModel] = {}
    for i, r in enumerate(rows, start=2):
        kind = _field(r, "pim_type", PIM_FILE, i)
        power = _field(r, "power_constraint", PIM_FILE, i) == "True"
        dev = ATTACC_DEVICES.get((kind, power))
        if dev is None:
            raise ConfigurationError(
                f"{PIM_FILE}, line {i}: pim_type '{kind}' is not one of BA, BG, BUFFER"
            )
        nhead = int(_field(r, "nhead", PIM_FILE, i))
        ctx = int(_field(r, "L", PIM_FILE, i))
        ref_s = float(_field(r, "latency_ns", PIM_FILE, i)) * 1e-9
        if dev not in groups:
            groups[dev] = GroupModel("attn", cost_model_for(load_device(dev)), ATTACC_STACKS)
        batch = batch_for_pairs_per_stack(nhead, model.n_heads, ATTACC_STACKS)
        t = float(groups[dev].layer_attention(layer_kernels(model, batch, ctx)).time_s)
        label = f"{kind}{' pl' if power else ''} nhead {nhead} L {ctx}"
        pts.append(Point(f"PIM attention ({kind})", label, ref_s, t))
    return pts


def gpu_attention_points(rows: list[dict[str, str]], model: ModelSpec) -> list[Point]:
    """GPU-only decode attention per step (all layers) against AttAcc's ``g_matmul``."""
    gpus = GroupModel("gpu", cost_model_for(load_device(ATTACC_GPU)), ATTACC_GPUS)
    pts = []
    for i, r in enumerate(rows, start=2):
        if _field(r, "hw", E2E_FILE, i) != "NONE":
            continue
        lin = int(_field(r, "Lin", E2E_FILE, i))
        lout = int(_field(r, "Lout", E2E_FILE, i))
        bs = int(_field(r, "bs", E2E_FILE, i))
        ref_s = float(_field(r, "g_matmul", E2E_FILE, i)) * 1e-3
        steps = [lin + s for s in range(1, max(lout, 2))]
        # g_matmul is score + context (AttAcc reports the softmax apart, as g_softmax)
        per_layer = np.mean([float(gpus.layer_attention(
            [k for k in layer_kernels(model, bs, c) if k.op != "softmax"]).time_s)
            for c in steps])
        pts.append(Point("GPU attention", f"bs {bs} Lin {lin} Lout {lout}", ref_s,
                         per_layer * model.n_layers))
    return pts


def attacc_system(device: str | None, overlap: bool = False) -> SystemSpec:
    """AttAcc's reference system: 8 A100 (TP 8) and, with ``device``, 40 AttAcc stacks holding
    the KV cache (FC on the GPUs, attention on the stacks); ``overlap``: AttAcc's
    ``--pipeopt --ffopt`` (see ``OverlapSpec``)."""
    groups: list[dict[str, object]] = [
        {"role": "gpu", "device": ATTACC_GPU, "count": ATTACC_GPUS,
         "holds": ["weights"] if device else ["weights", "kv"]}]
    if device:
        groups.append({"role": "attn", "device": device, "count": ATTACC_STACKS,
                       "holds": ["kv"]})
    policies: dict[str, object] = {"fc_placement": "static-gpu"}
    if overlap:
        policies["overlap"] = {"subbatches": ATTACC_SUBBATCHES,
                               "ffn_on_attention_pim": True}
    return SystemSpec.model_validate({
        "name": f"attacc-reference-{device or 'gpu-only'}", "groups": groups,
        "tensor_parallel": ATTACC_GPUS, "policies": policies,
        "source": "AttAcc simulator main.py system (8 A100a, 8 x 5 HBM3-PIM)"})


def end_to_end_points(rows: list[dict[str, str]], model: ModelSpec) -> list[Point]:
    """Decode step time and decode throughput of AttAcc's main.py rows: a static batch of
    ``bs`` requests of ``Lin`` prompt and ``Lout`` output tokens (beyond LLaMA-65B's context:
    run with ``long_context=allow``), pimserve's mean decode iteration against ``g_time_ms``
    and ``bs / step`` against ``decode_tokens_per_s``."""
    from pimserve.api import simulate

    pts: list[Point] = []
    done: dict[tuple, tuple[float, float]] = {}
    for i, r in enumerate(rows, start=2):
        hw = _field(r, "hw", E2E_FILE, i)
        pipe = _field(r, "pipe_level", E2E_FILE, i) == "True"
        ffopt = _field(r, "is_parallel", E2E_FILE, i) == "True"
        power = _field(r, "power_constraint", E2E_FILE, i) == "True"
        lin = int(_field(r, "Lin", E2E_FILE, i))
        lout = int(_field(r, "Lout", E2E_FILE, i))
        bs = int(_field(r, "bs", E2E_FILE, i))
        ref_ms = float(_field(r, "g_time_ms", E2E_FILE, i))
        ref_tok = float(_field(r, "decode_tokens_per_s", E2E_FILE, i))
        if hw == "NONE":
            dev = None
        elif (hw, power) in ATTACC_DEVICES:
            dev = ATTACC_DEVICES[(hw, power)]
        else:
            raise ConfigurationError(f"{E2E_FILE}, line {i}: hw '{hw}' is not NONE, BA, BG, BUFFER")
        if pipe != ffopt:
            continue  # pimserve models AttAcc's two optimisations together only
        key = (dev, pipe, lin, lout, bs)
        if key not in done:
            n = bs
            req = Requests(id=np.arange(n), arrival_s=np.zeros(n),
                           prompt_tokens=np.full(n, lin), output_tokens=np.full(n, lout),
                           source="AttAcc end-to-end row")
            res = simulate(attacc_system(dev, pipe), model, req, batch=bs, batching="static",
                           long_context="allow")
            steps = max(1, lout - 1)
            step_s = res.decode_time_s / steps
            done[key] = (step_s, bs / step_s)
        step_s, tok_s = done[key]
        kind = "GPU only" if dev is None else f"{hw}{' pl' if power else ''}"
        mode = "with overlap" if pipe else "no overlap"
        label = f"{kind} bs {bs} Lin {lin} Lout {lout}"
        pts.append(Point(f"decode step ({mode})", label, ref_ms * 1e-3, step_s))
        # throughput as a time per token so that the ratio reads the same way as the others
        pts.append(Point(f"decode throughput ({mode})", label, 1.0 / ref_tok, 1.0 / tok_s))
    return pts


def validate_attacc(data_dir: str | Path, end_to_end: bool = True) -> Validation:
    """Every point of the AttAcc reference in ``data_dir`` that pimserve expresses."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ConfigurationError(
            f"--data {folder}: not a folder; pass the folder holding {PIM_FILE} and {E2E_FILE}"
        )
    model = load_model(ATTACC_MODEL)
    v = Validation()
    v.points += pim_attention_points(_read_csv(folder, PIM_FILE), model)
    e2e = _read_csv(folder, E2E_FILE)
    v.points += gpu_attention_points(e2e, model)
    if end_to_end:
        v.points += end_to_end_points(e2e, model)
    return v
