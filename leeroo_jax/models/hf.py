"""Map a Hugging Face `config.json` to our frozen model configs.

Every architectural choice (GQA, RoPE theta and scaling, biases, sliding windows, tied
embeddings) is read from the HF config, never inferred from a model name, so any
checkpoint of a supported family loads without code changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from leeroo_jax.errors import WeightsError

DECODER_TYPES = ("llama", "mistral", "qwen2")
ENCODER_TYPES = ("bert",)
SUPPORTED_ROPE = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # (rope_type, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
    rope_scaling: tuple[str, float, float, float, int] = ("default", 1.0, 1.0, 1.0, 0)
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 (and Llama with attention_bias)
    o_bias: bool = False  # Llama with attention_bias
    mlp_bias: bool = False
    # Per-layer attention window; 0 = full causal attention. Mistral: every layer; Qwen2: by layer_types.
    sliding_windows: tuple[int, ...] = ()
    max_position_embeddings: int = 2048
    model_type: str = "llama"

    def window(self, layer: int) -> int:
        return self.sliding_windows[layer] if self.sliding_windows else 0


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    has_pooler: bool = True
    model_type: str = "bert"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    value = getattr(cfg, name, default)
    return default if value is None else value


def _rope(cfg: Any) -> tuple[float, tuple[str, float, float, float, int]]:
    # transformers 5 moved rope_theta and rope_scaling into `rope_parameters`.
    params = dict(_get(cfg, "rope_parameters", {}) or {})
    legacy = _get(cfg, "rope_scaling", None)
    if legacy:
        params = {**legacy, **params}
    theta = float(params.get("rope_theta", _get(cfg, "rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE:
        raise WeightsError(
            f"rope_type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE)}); "
            "use a checkpoint with one of those or add it to models/layers.py:rope_frequencies"
        )
    return theta, (
        rope_type,
        float(params.get("factor", 1.0)),
        float(params.get("low_freq_factor", 1.0)),
        float(params.get("high_freq_factor", 4.0)),
        int(params.get("original_max_position_embeddings", 0) or 0),
    )


def _sliding_windows(cfg: Any, num_layers: int) -> tuple[int, ...]:
    window = _get(cfg, "sliding_window", None)
    layer_types = _get(cfg, "layer_types", None)
    if layer_types is not None:  # Qwen2 and newer configs say it per layer
        return tuple(int(window or 0) if t == "sliding_attention" else 0 for t in layer_types)
    if _get(cfg, "use_sliding_window", True) and window:
        return (int(window),) * num_layers
    return ()


def decoder_config(cfg: Any) -> DecoderConfig:
    hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
    layers = int(cfg.num_hidden_layers)
    theta, scaling = _rope(cfg)
    model_type = cfg.model_type
    attention_bias = bool(_get(cfg, "attention_bias", False))
    qkv_bias = model_type == "qwen2" or attention_bias  # Qwen2 checkpoints always carry q/k/v biases
    return DecoderConfig(
        vocab_size=int(cfg.vocab_size),
        hidden_size=hidden,
        intermediate_size=int(cfg.intermediate_size),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", heads)),
        head_dim=int(_get(cfg, "head_dim", hidden // heads)),
        rms_norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(_get(cfg, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=attention_bias,
        mlp_bias=bool(_get(cfg, "mlp_bias", False)),
        sliding_windows=_sliding_windows(cfg, layers),
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", 2048)),
        model_type=model_type,
    )


def encoder_config(cfg: Any, has_pooler: bool = True) -> EncoderConfig:
    act = _get(cfg, "hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
        raise WeightsError(f"hidden_act {act!r} is not supported for BERT; use gelu, gelu_new or relu")
    return EncoderConfig(
        vocab_size=int(cfg.vocab_size),
        hidden_size=int(cfg.hidden_size),
        intermediate_size=int(cfg.intermediate_size),
        num_layers=int(cfg.num_hidden_layers),
        num_heads=int(cfg.num_attention_heads),
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", 512)),
        type_vocab_size=int(_get(cfg, "type_vocab_size", 2)),
        layer_norm_eps=float(_get(cfg, "layer_norm_eps", 1e-12)),
        hidden_act=act,
        has_pooler=has_pooler,
        model_type=cfg.model_type,
    )


def model_config(cfg: Any, has_pooler: bool = True) -> DecoderConfig | EncoderConfig:
    """Our config for a transformers `PretrainedConfig`; unknown model_type is a one-line error."""
    model_type = getattr(cfg, "model_type", None)
    if model_type in DECODER_TYPES:
        return decoder_config(cfg)
    if model_type in ENCODER_TYPES:
        return encoder_config(cfg, has_pooler)
    raise WeightsError(
        f"model_type {model_type!r} is not supported (supported: {', '.join(DECODER_TYPES + ENCODER_TYPES)}); "
        "pick a checkpoint of a supported family"
    )
