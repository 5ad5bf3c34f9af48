"""ModelSpec: the shape of a decoder-only transformer, enough to count its work and memory."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt, model_validator

from pimserve.specs.base import Spec

FFNKind = Literal["gelu", "relu", "swiglu"]


class ModelSpec(Spec):
    """A decoder-only LLM. Sizes are element counts; memory follows from ``dtype_bytes``."""

    name: str = Field(description="registry name, e.g. llama-65b")
    display_name: str = Field("", description="human-readable name")
    aliases: list[str] = Field(default_factory=list, description="other accepted names")
    source: str = Field("", description="where the numbers come from")
    notes: str = Field("", description="assumptions a user should know about")
    n_layers: int = Field(gt=0, description="decoder layers")
    hidden_size: int = Field(gt=0, description="d_model")
    n_heads: int = Field(gt=0, description="query heads")
    n_kv_heads: int = Field(gt=0, description="key/value heads (GQA when < n_heads)")
    head_dim: int = Field(gt=0, description="dimension of one head")
    ffn_size: int = Field(gt=0, description="FFN intermediate size (per expert for MoE)")
    ffn_kind: FFNKind = Field(description="gelu/relu: up+down; swiglu: gate+up+down")
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0, description="maximum context length in tokens")
    n_experts: int = Field(1, ge=1, description="FFN experts per layer (1 = dense)")
    experts_per_token: int = Field(1, ge=1, description="top-k routing for MoE")
    dtype_bytes: StrictInt = Field(
        2, gt=0, description="bytes per weight and KV element (2 = FP16), an integer"
    )
    tied_embeddings: bool = Field(False, description="LM head shares the embedding matrix")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.experts_per_token > self.n_experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) exceeds n_experts ({self.n_experts})"
            )
        return self

    # ---- derived quantities -------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Width of the concatenated query heads."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads."""
        return self.n_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 for MHA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in one FFN (3 for SwiGLU, else 2)."""
        return 3 if self.ffn_kind == "swiglu" else 2

    @property
    def attn_params_per_layer(self) -> int:
        h = self.hidden_size
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h

    @property
    def ffn_params_per_layer(self) -> int:
        """All experts' FFN weights plus the router."""
        per_expert = self.ffn_matrices * self.hidden_size * self.ffn_size
        router = self.hidden_size * self.n_experts if self.is_moe else 0
        return per_expert * self.n_experts + router

    @property
    def embedding_params(self) -> int:
        """Token embedding plus the LM head when it is not tied."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def n_params(self) -> int:
        """Total parameters (norms and biases excluded: under 0.01% for these models)."""
        layer = self.attn_params_per_layer + self.ffn_params_per_layer
        return self.n_layers * layer + self.embedding_params

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes for one token over all layers: 2 (K, V) x layers x kv_dim x dtype."""
        return 2 * self.n_layers * self.kv_dim * self.dtype_bytes
