"""Model presets and HuggingFace config loading: sizes match the published ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pimserve.errors import SpecError, UnknownNameError
from pimserve.specs import list_models, load_model, model_names
from pimserve.specs.catalog import PRESETS
from pimserve.specs.hf import SUPPORTED_MODEL_TYPES, load_hf_config
from pimserve.specs.model import ModelSpec

MiB, KiB = 2**20, 2**10

# Published parameter counts (billions) and where they are stated.
PUBLISHED_PARAMS_B = {
    "llama-65b": 65.2,  # LLaMA paper (arXiv 2302.13971) Table 2: 65.2B
    "llama2-70b": 69.0,  # HF meta-llama/Llama-2-70b-hf safetensors: 68.98B ("70B")
    "llama3-8b": 8.03,  # HF meta-llama/Meta-Llama-3-8B model card: 8.03B
    "llama3-70b": 70.6,  # HF meta-llama/Meta-Llama-3-70B model card: 70.6B
    "gpt3-175b": 175.0,  # GPT-3 paper (arXiv 2005.14165) Table 2.1
    "gpt3-66b": 66.0,  # OPT-66B dimensions (arXiv 2205.01068 Table 1)
    "opt-66b": 66.0,  # OPT paper (arXiv 2205.01068) Table 1
    "opt-175b": 175.0,  # OPT paper (arXiv 2205.01068) Table 1
    "mixtral-8x7b": 46.7,  # Mixtral paper (arXiv 2401.04088) Sec. 2: 46.7B total
    "qwen2.5-32b": 32.5,  # HF Qwen/Qwen2.5-32B model card: 32.5B
    "llama3.1-8b": 8.03,  # HF meta-llama/Llama-3.1-8B model card: 8.03B
    "llama3.1-70b": 70.6,  # HF meta-llama/Llama-3.1-70B model card: 70.6B
    "llama3.1-405b": 405.0,  # Llama 3 paper (arXiv 2407.21783): 405B
}


def test_every_expected_model_is_a_preset():
    assert set(model_names()) == set(PUBLISHED_PARAMS_B)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_B))
def test_parameter_count_within_1_5_percent_of_published(name):
    m = load_model(name)
    published = PUBLISHED_PARAMS_B[name] * 1e9
    assert abs(m.n_params - published) / published < 0.015, m.n_params / 1e9


def test_llama_65b_parameter_count_by_hand():
    # per layer: attention 4 x 8192^2 = 268,435,456; SwiGLU 3 x 8192 x 22016 = 541,065,216
    # 80 layers -> 80 x 809,500,672 = 64,760,053,760; + untied embeddings 2 x 32000 x 8192
    # = 524,288,000 -> 65,284,341,760
    assert load_model("llama-65b").n_params == 65_284_341_760


def test_mixtral_active_parameters_about_12_9b():
    # Active per token: attention + 2 of 8 experts per layer + embeddings (arXiv 2401.04088: 12.9B)
    m = load_model("mixtral-8x7b")
    per_expert = 3 * m.hidden_size * m.ffn_size
    active = m.n_params - m.n_layers * (m.n_experts - m.experts_per_token) * per_expert
    assert abs(active / 1e9 - 12.9) / 12.9 < 0.015


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-65b", int(2.5 * MiB)),  # 2 x 80 layers x 8192 x 2 B = 2,621,440
        ("llama3-70b", 320 * KiB),  # 2 x 80 x (8 x 128) x 2 B = 327,680
        ("llama2-70b", 320 * KiB),  # same shape of KV as Llama-3-70B
        ("gpt3-175b", int(4.5 * MiB)),  # 2 x 96 x 12288 x 2 B = 4,718,592
        ("mixtral-8x7b", 128 * KiB),  # 2 x 32 x 1024 x 2 B = 131,072
    ],
)
def test_kv_bytes_per_token_exact(name, expected):
    assert load_model(name).kv_bytes_per_token == expected


def test_tied_embeddings_per_family():
    tied = {m.name: m.tied_embeddings for m in list_models()}
    assert tied == {
        "llama-65b": False, "llama2-70b": False, "llama3-8b": False, "llama3-70b": False,
        "llama3.1-8b": False, "llama3.1-70b": False, "llama3.1-405b": False,
        "qwen2.5-32b": False, "mixtral-8x7b": False,
        "gpt3-175b": True, "gpt3-66b": True, "opt-66b": True, "opt-175b": True,
    }  # fmt: skip


def test_gpt3_66b_is_opt_66b_dims_with_gpt2_vocab_and_says_so():
    g, o = load_model("gpt3-66b"), load_model("opt-66b")
    for f in ("n_layers", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "ffn_size"):
        assert getattr(g, f) == getattr(o, f)
    assert g.vocab_size == 50257 and o.vocab_size == 50272
    assert "not" in g.notes and "OPT-66B" in g.notes


def test_opt_175b_shape():
    m = load_model("opt-175b")
    shape = (m.n_layers, m.hidden_size, m.n_heads, m.ffn_size, m.ffn_kind, m.vocab_size)
    assert shape == (96, 12288, 96, 49152, "relu", 50272) and m.max_context == 2048


def _preset_files() -> list[Path]:
    return sorted((PRESETS / "models").glob("*.yaml"))


@pytest.mark.parametrize("path", _preset_files(), ids=lambda p: p.stem)
def test_every_number_in_a_preset_has_a_source_comment(path):
    data = yaml.safe_load(path.read_text())
    assert data["source"] and path.stem == data["name"]
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        value = rest.split("#")[0].strip()
        if sep and not line.startswith((" ", "#")) and value.replace("_", "").isdigit():
            assert "# source:" in line, f"{path.name}: '{key}' has no source comment"


def test_every_alias_resolves_and_no_alias_is_shared():
    seen: dict[str, str] = {}
    for path in _preset_files():
        data = yaml.safe_load(path.read_text())
        for alias in [data["name"], *data.get("aliases", [])]:
            assert seen.setdefault(alias.lower(), data["name"]) == data["name"], alias
            assert load_model(alias).name == data["name"]
    # HF repo ids (with "/") resolve to presets rather than being read as file paths
    assert load_model("meta-llama/Meta-Llama-3-70B").name == "llama3-70b"
    assert load_model("Qwen/Qwen2.5-32B").name == "qwen2.5-32b"
    assert load_model("MIXTRAL").name == "mixtral-8x7b"


def test_unknown_model_name_suggests_close_one():
    with pytest.raises(UnknownNameError) as err:
        load_model("mixtral-8x22b")
    msg = str(err.value)
    assert "did you mean 'mixtral-8x7b'?" in msg and "\n" not in msg


# ---- HuggingFace config.json -----------------------------------------------------------------
def _write(tmp_path: Path, cfg: dict | str, sub: str = "model") -> Path:
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    path = folder / "config.json"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
    return path


MIXTRAL_CONFIG = {  # mistralai/Mixtral-8x7B-Instruct-v0.1 config.json (abridged)
    "architectures": ["MixtralForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "rope_theta": 1e6,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}

SHAPE_FIELDS = (
    "n_layers", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "ffn_size", "ffn_kind",
    "vocab_size", "max_context", "n_experts", "experts_per_token", "dtype_bytes",
    "tied_embeddings",
)  # fmt: skip


def _shape(m: ModelSpec) -> dict:
    return {f: getattr(m, f) for f in SHAPE_FIELDS}


def test_mixtral_config_equals_the_preset(tmp_path):
    path = _write(tmp_path, MIXTRAL_CONFIG, "Mixtral-8x7B")
    spec = load_model(str(path))  # catalog dispatches *.json to load_hf_config
    assert _shape(spec) == _shape(load_model("mixtral-8x7b"))
    assert spec.name == "Mixtral-8x7B" and spec.n_params == load_model("mixtral").n_params


def test_llama_config_equals_llama3_70b_preset(tmp_path):
    cfg = {
        "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "_name_or_path": "meta-llama/Meta-Llama-3-70B",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert _shape(spec) == _shape(load_model("llama3-70b"))
    assert spec.name == "meta-llama/Meta-Llama-3-70B"


def test_llama_defaults_mha_and_head_dim(tmp_path):
    # LLaMA-65B style config without num_key_value_heads / head_dim: MHA, 8192 / 64 = 128
    cfg = {
        "model_type": "llama", "hidden_size": 8192, "intermediate_size": 22016,
        "num_hidden_layers": 80, "num_attention_heads": 64, "vocab_size": 32000,
        "max_position_embeddings": 2048, "torch_dtype": "float16",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert _shape(spec) == _shape(load_model("llama-65b"))


def test_mistral_config(tmp_path):
    cfg = {
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
        "torch_dtype": "float32",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert (spec.n_kv_heads, spec.head_dim, spec.n_experts, spec.dtype_bytes) == (8, 128, 1, 4)
    assert spec.ffn_kind == "swiglu" and not spec.tied_embeddings
    assert "sliding_window 4096" in spec.notes


def test_qwen2_config_equals_the_preset(tmp_path):
    cfg = {
        "model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 27648,
        "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8,
        "vocab_size": 152064, "max_position_embeddings": 131072, "sliding_window": 131072,
        "use_sliding_window": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert _shape(spec) == _shape(load_model("Qwen/Qwen2.5-32B"))
    assert spec.notes == ""  # sliding window disabled: nothing to flag


def test_opt_config_equals_the_preset(tmp_path):
    cfg = {
        "model_type": "opt", "hidden_size": 9216, "ffn_dim": 36864, "num_hidden_layers": 64,
        "num_attention_heads": 72, "vocab_size": 50272, "max_position_embeddings": 2048,
        "activation_function": "relu", "word_embed_proj_dim": 9216, "torch_dtype": "float16",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert _shape(spec) == _shape(load_model("opt-66b"))


def test_gpt2_config_n_inner_null_is_4h_and_no_dtype_is_noted(tmp_path):
    # GPT-2 small: 12 layers, 768 wide, 12 heads, n_inner null -> 4 x 768 = 3072
    cfg = {
        "model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_inner": None,
        "n_positions": 1024, "vocab_size": 50257, "activation_function": "gelu_new",
    }  # fmt: skip
    spec = load_hf_config(_write(tmp_path, cfg))
    assert (spec.n_layers, spec.hidden_size, spec.head_dim, spec.ffn_size) == (12, 768, 64, 3072)
    assert spec.ffn_kind == "gelu" and spec.tied_embeddings and spec.max_context == 1024
    assert spec.dtype_bytes == 2 and "FP16" in spec.notes
    # 12 x 12 x 768^2 + 50257 x 768 = 84,934,656 + 38,597,376 (GPT-2 small is "124M" with
    # position embeddings, norms and biases)
    assert spec.n_params == 123_532_032


def test_supported_types_are_the_six():
    assert SUPPORTED_MODEL_TYPES == ("gpt2", "llama", "mistral", "mixtral", "opt", "qwen2")


def test_unknown_model_type_lists_supported(tmp_path):
    path = _write(tmp_path, {"model_type": "falcon", "hidden_size": 4544})
    with pytest.raises(SpecError) as err:
        load_model(str(path))
    msg = str(err.value)
    assert str(path) in msg and "'falcon'" in msg and "\n" not in msg
    assert "gpt2, llama, mistral, mixtral, opt, qwen2" in msg


def test_missing_key_names_key_and_file(tmp_path):
    cfg = {k: v for k, v in MIXTRAL_CONFIG.items() if k != "num_local_experts"}
    path = _write(tmp_path, cfg)
    with pytest.raises(SpecError, match="num_local_experts") as err:
        load_hf_config(path)
    assert str(path) in str(err.value)


def test_wrong_type_and_dtype_are_named(tmp_path):
    path = _write(tmp_path, {**MIXTRAL_CONFIG, "hidden_size": "4096"})
    with pytest.raises(SpecError, match="'hidden_size' must be a positive integer"):
        load_hf_config(path)
    path = _write(tmp_path, {**MIXTRAL_CONFIG, "torch_dtype": "int3"}, "b")
    with pytest.raises(SpecError, match="float16, bfloat16, float32"):
        load_hf_config(path)


def test_inconsistent_heads_are_rejected_with_file(tmp_path):
    path = _write(tmp_path, {**MIXTRAL_CONFIG, "num_key_value_heads": 5})
    with pytest.raises(SpecError, match="multiple of n_kv_heads") as err:
        load_hf_config(path)
    assert str(path) in str(err.value)


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, '{\n  "model_type": "llama",\n  "hidden_size": 4096\n  "x": 1\n}')
    with pytest.raises(SpecError) as err:
        load_model(str(path))
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and "malformed JSON" in msg and "\n" not in msg


def test_folder_with_config_json_loads(tmp_path):
    path = _write(tmp_path, MIXTRAL_CONFIG, "mixtral-local")
    assert load_hf_config(path.parent).n_experts == 8
