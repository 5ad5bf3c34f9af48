"""Read a HuggingFace ``config.json`` into a :class:`ModelSpec`.

Supported ``model_type`` values and the keys read (sizes are element counts, context in
tokens):

- ``llama``, ``mistral``, ``qwen2``, ``mixtral``: ``num_hidden_layers``, ``hidden_size``,
  ``num_attention_heads``, ``intermediate_size``, ``vocab_size``, ``max_position_embeddings``;
  optional ``num_key_value_heads`` (default: the query heads), ``head_dim`` (default
  ``hidden_size / num_attention_heads``), ``tie_word_embeddings`` (default false, as in the
  transformers config classes); ``mixtral`` also needs ``num_local_experts`` and
  ``num_experts_per_tok``. The MLP is gated (``ffn_kind: swiglu``).
- ``opt``: ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``ffn_dim``,
  ``vocab_size``, ``max_position_embeddings``, ``activation_function`` (relu or gelu);
  ``tie_word_embeddings`` defaults to true.
- ``gpt2``: ``n_layer``, ``n_embd``, ``n_head``, ``n_inner`` (absent or null: 4 x ``n_embd``),
  ``n_positions``, ``vocab_size``, ``activation_function``; embeddings tied by default.

``torch_dtype`` (or the newer ``dtype``) gives the bytes per element: float16 and bfloat16 are
2, float32 is 4; a config without it is taken as FP16 and the spec's ``notes`` say so.
Every problem raises a one-line :class:`SpecError` naming the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pimserve.errors import SpecError
from pimserve.fileio import MAX_SPEC_BYTES, read_bounded_text
from pimserve.specs.base import validate
from pimserve.specs.model import ModelSpec

DTYPE_BYTES: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4}
"""Bytes per element for the ``torch_dtype`` values accepted."""


class _Config:
    """A parsed config.json with typed accessors whose errors name the file and key."""

    def __init__(self, data: dict[str, Any], where: str):
        self.data = data
        self.where = where
        self.notes: list[str] = []

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get_int(self, key: str, default: int | None = None) -> int:
        """A positive integer under ``key``; ``default`` when absent or null (if given)."""
        value = self.data.get(key)
        if value is None:
            if default is not None:
                return default
            raise SpecError(f"{self.where}: required key '{key}' is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(f"{self.where}: key '{key}' must be a positive integer (got {value!r})")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(f"{self.where}: key '{key}' must be true or false (got {value!r})")
        return value

    def get_str(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key)
        if value is None:
            if default is not None:
                return default
            raise SpecError(f"{self.where}: required key '{key}' is missing")
        if not isinstance(value, str):
            raise SpecError(f"{self.where}: key '{key}' must be a string (got {value!r})")
        return value

    def dtype_bytes(self) -> int:
        key = "torch_dtype" if self.has("torch_dtype") else "dtype"
        if not self.has(key):
            self.notes.append("config has no torch_dtype: FP16 (2 bytes) assumed")
            return 2
        name = self.get_str(key)
        if name not in DTYPE_BYTES:
            raise SpecError(
                f"{self.where}: key '{key}' must be one of {', '.join(DTYPE_BYTES)} (got {name!r})"
            )
        return DTYPE_BYTES[name]

    def head_dim(self, hidden: int, heads: int, key: str | None = "head_dim") -> int:
        if key is not None and self.has(key):
            return self.get_int(key)
        if hidden % heads:
            raise SpecError(
                f"{self.where}: hidden size {hidden} is not a multiple of the {heads} heads "
                "(give 'head_dim')"
            )
        return hidden // heads


def _llama_like(c: _Config) -> dict[str, Any]:
    """llama, mistral, qwen2 and mixtral: gated MLP, optional GQA and experts."""
    hidden = c.get_int("hidden_size")
    heads = c.get_int("num_attention_heads")
    out: dict[str, Any] = {
        "n_layers": c.get_int("num_hidden_layers"),
        "hidden_size": hidden,
        "n_heads": heads,
        "n_kv_heads": c.get_int("num_key_value_heads", default=heads),
        "head_dim": c.head_dim(hidden, heads),
        "ffn_size": c.get_int("intermediate_size"),
        "ffn_kind": "swiglu",
        "vocab_size": c.get_int("vocab_size"),
        "max_context": c.get_int("max_position_embeddings"),
        "tied_embeddings": c.get_bool("tie_word_embeddings", default=False),
    }
    if c.data.get("model_type") == "mixtral":
        out["n_experts"] = c.get_int("num_local_experts")
        out["experts_per_token"] = c.get_int("num_experts_per_tok")
    window = c.data.get("sliding_window")
    if window is not None and c.get_bool("use_sliding_window", default=True):
        c.notes.append(f"sliding_window {window} in the config is not modelled (full attention)")
    return out


def _activation(c: _Config, key: str, relu: tuple[str, ...], gelu: tuple[str, ...]) -> str:
    name = c.get_str(key)
    if name in relu:
        return "relu"
    if name in gelu:
        return "gelu"
    accepted = ", ".join((*relu, *gelu))
    raise SpecError(f"{c.where}: key '{key}' must be one of {accepted} (got {name!r})")


def _opt(c: _Config) -> dict[str, Any]:
    hidden = c.get_int("hidden_size")
    heads = c.get_int("num_attention_heads")
    proj = c.data.get("word_embed_proj_dim")
    if proj is not None and proj != hidden:
        c.notes.append(f"word_embed_proj_dim {proj} != hidden_size: projections not counted")
    return {
        "n_layers": c.get_int("num_hidden_layers"),
        "hidden_size": hidden,
        "n_heads": heads,
        "n_kv_heads": heads,
        "head_dim": c.head_dim(hidden, heads, key=None),
        "ffn_size": c.get_int("ffn_dim"),
        "ffn_kind": _activation(c, "activation_function", ("relu",), ("gelu", "gelu_new")),
        "vocab_size": c.get_int("vocab_size"),
        "max_context": c.get_int("max_position_embeddings"),
        "tied_embeddings": c.get_bool("tie_word_embeddings", default=True),
    }


def _gpt2(c: _Config) -> dict[str, Any]:
    hidden = c.get_int("n_embd")
    heads = c.get_int("n_head")
    return {
        "n_layers": c.get_int("n_layer"),
        "hidden_size": hidden,
        "n_heads": heads,
        "n_kv_heads": heads,
        "head_dim": c.head_dim(hidden, heads, key=None),
        "ffn_size": c.get_int("n_inner", default=4 * hidden),
        "ffn_kind": _activation(
            c,
            "activation_function",
            ("relu",),
            ("gelu_new", "gelu", "gelu_fast", "gelu_pytorch_tanh"),
        ),
        "vocab_size": c.get_int("vocab_size"),
        "max_context": c.get_int("n_positions"),
        "tied_embeddings": c.get_bool("tie_word_embeddings", default=True),
    }


_READERS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "gpt2": _gpt2,
    "llama": _llama_like,
    "mistral": _llama_like,
    "mixtral": _llama_like,
    "opt": _opt,
    "qwen2": _llama_like,
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_READERS))
"""The ``model_type`` values :func:`load_hf_config` reads."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = read_bounded_text(path, MAX_SPEC_BYTES, "JSON model config")
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(
            f"{path}: line {err.lineno}, column {err.colno}: malformed JSON: {err.msg}"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object of config keys, got {type(data).__name__}")
    return data


def _default_name(path: Path, data: dict[str, Any]) -> str:
    """``_name_or_path`` when the config has one, else the folder (or file) name."""
    given = data.get("_name_or_path")
    if isinstance(given, str) and given:
        return given
    return path.parent.name if path.name == "config.json" and path.parent.name else path.stem


def load_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a HuggingFace ``config.json``.

    ``path`` is the config file (or a folder holding ``config.json``); ``name`` overrides the
    spec's name (default: the config's ``_name_or_path``, else the folder name). Raises
    :class:`SpecError` with one line naming the file and the key for a missing or wrong key,
    an unsupported ``model_type`` or malformed JSON.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    data = _read_json(path)
    where = str(path)
    model_type = data.get("model_type")
    if model_type is None:
        raise SpecError(f"{where}: required key 'model_type' is missing")
    if model_type not in _READERS:
        raise SpecError(
            f"{where}: unsupported model_type {model_type!r} "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    c = _Config(data, where)
    fields = _READERS[model_type](c)
    fields["dtype_bytes"] = c.dtype_bytes()
    spec_name = name or _default_name(path, data)
    fields.update(
        name=spec_name,
        display_name=spec_name,
        source=f"HuggingFace config.json ({path}), model_type {model_type}",
        notes="; ".join(c.notes),
    )
    return validate(ModelSpec, fields, where)
