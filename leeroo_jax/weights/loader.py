"""Load Hugging Face checkpoints into our Flax models, sharded as they are read.

    loaded = load("path/to/hf_dir" or "org/name", mesh, dtype=jnp.bfloat16)
    loaded.model(tokens, mask)

Steps: config.json -> transformers config class -> our frozen config; build the abstract
model (`nnx.eval_shape`, no memory) to learn every parameter's shape and logical axes;
match each checkpoint key to a parameter with the regex key maps; then, one parameter at a
time, read its tensors from the memory-mapped safetensors, transform them to our layout,
and place them with `jax.make_array_from_callback`, so each device receives only its shard
and the host never holds more than one (stacked) parameter beyond the page cache.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from leeroo_jax import sharding
from leeroo_jax.errors import WeightsError, run_main
from leeroo_jax.models import hf
from leeroo_jax.models.decoder import Decoder
from leeroo_jax.models.encoder import Encoder
from leeroo_jax.weights import keymaps
from leeroo_jax.weights.safetensors_io import open_checkpoint

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "special_tokens_map.json",
              "vocab.txt", "merges.txt", "vocab.json", "generation_config.json"]


@dataclasses.dataclass
class Loaded:
    model: Decoder | Encoder
    config: hf.DecoderConfig | hf.EncoderConfig
    hf_config: Any
    tokenizer: Any  # a transformers tokenizer, or None when the directory has none
    path: pathlib.Path
    mesh: Mesh


def resolve(path_or_id: str | os.PathLike) -> pathlib.Path:
    """A local checkpoint directory, downloading a hub id when online."""
    path = pathlib.Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise WeightsError(f"{path} is a file; pass the checkpoint directory holding config.json and the safetensors")
    text = str(path_or_id)
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise WeightsError(f"{text} does not exist; pass a checkpoint directory or a Hugging Face hub id")
    try:
        from huggingface_hub import snapshot_download

        return pathlib.Path(snapshot_download(text, allow_patterns=_HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated repo, network error: all one answer
        raise WeightsError(
            f"cannot fetch {text!r} from the Hugging Face hub ({type(e).__name__}: offline or unknown id); "
            "pass a local directory with config.json and model.safetensors instead"
        ) from None


def read_hf_config(directory: pathlib.Path) -> Any:
    if not (directory / "config.json").exists():
        raise WeightsError(f"{directory} has no config.json; pass a Hugging Face checkpoint directory")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{directory}/config.json cannot be read ({first[:200]}); fix or replace config.json") from None


def _transform(x: np.ndarray, tf: str, target: tuple[int, ...]) -> np.ndarray:
    """Torch layout -> ours for one layer; `target` is our per-layer shape."""
    if tf == "copy":
        expected, out = target, lambda: x
    elif tf == "t":
        expected, out = target[::-1], lambda: x.T
    elif tf == "in_heads":  # [H*d, D] -> [D, H, d]
        D, H, d = target
        expected, out = (H * d, D), lambda: x.reshape(H, d, D).transpose(2, 0, 1)
    elif tf == "out_heads":  # [D, H*d] -> [H, d, D]
        H, d, D = target
        expected, out = (D, H * d), lambda: x.reshape(D, H, d).transpose(1, 2, 0)
    elif tf == "heads":  # [H*d] -> [H, d]
        expected, out = (target[0] * target[1],), lambda: x.reshape(target)
    else:
        raise AssertionError(tf)
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"shape {tuple(x.shape)}, expected {tuple(expected)}")
    return out()


def _plan(model_type: str, keys: list[str], tied: bool) -> dict[tuple[str, int | None], tuple[str, str]]:
    """(target, layer) -> (checkpoint key, transform); errors on unused or duplicate keys."""
    plan: dict[tuple[str, int | None], tuple[str, str]] = {}
    unused = []
    for key in keys:
        if keymaps.ignored(model_type, key) or (tied and key == "lm_head.weight"):
            continue  # tied: HF also drops a saved copy of the embedding
        hit = keymaps.match(model_type, key)
        if hit is None:
            unused.append(key)
            continue
        target, layer, tf = hit
        if (target, layer) in plan:
            raise WeightsError(f"checkpoint keys {plan[(target, layer)][0]} and {key} both fill {target}; remove one")
        plan[(target, layer)] = (key, tf)
    if unused:
        shown = ", ".join(sorted(unused)[:8]) + (f" (+{len(unused) - 8} more)" if len(unused) > 8 else "")
        raise WeightsError(
            f"{len(unused)} checkpoint keys match no parameter of a {model_type} model: {shown}; "
            "the checkpoint and config.json disagree, or keymaps.py lacks a rule"
        )
    return plan


def load(
    path_or_id: str | os.PathLike,
    mesh: Mesh | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    *,
    tokenizer: bool = True,
) -> Loaded:
    """Load a Llama/Mistral/Qwen2 or BERT checkpoint; see the module docstring."""
    directory = resolve(path_or_id)
    hf_cfg = read_hf_config(directory)
    tensors = open_checkpoint(directory)
    model_type = getattr(hf_cfg, "model_type", None)
    has_pooler = any(re.fullmatch(keymaps.POOLER_KEY, k) for k in tensors)
    cfg = hf.model_config(hf_cfg, has_pooler=has_pooler)  # unknown model_type -> WeightsError
    # no mesh: this process's first device (jax.devices()[0] belongs to process 0 alone)
    mesh = mesh if mesh is not None else sharding.make_mesh(sharding.MeshConfig(), devices=jax.local_devices()[:1])
    param_dtype = jnp.dtype(param_dtype or dtype)
    cls = Decoder if isinstance(cfg, hf.DecoderConfig) else Encoder

    abstract = nnx.eval_shape(lambda: cls(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    shardings = sharding.state_shardings(abs_state, mesh)
    plan = _plan(model_type, list(tensors), getattr(cfg, "tie_word_embeddings", False))

    flat_shardings = dict(nnx.to_flat_state(shardings))
    values, missing = {}, []
    for path, var in nnx.to_flat_state(abs_state):
        name = ".".join(str(p) for p in path)
        stacked = path[0] == "layers"
        slots = range(var.shape[0]) if stacked else [None]
        missing += [f"{name}[{i}]" if stacked else name for i in slots if (name, i) not in plan]
        if missing:
            continue
        host = np.empty(var.shape, param_dtype)  # one parameter at a time, freed after placing
        for i in slots:
            key, tf = plan.pop((name, i))
            try:
                block = _transform(tensors[key].get(key), tf, var.shape[1:] if stacked else var.shape)
            except ValueError as e:
                raise WeightsError(f"checkpoint tensor {key} has {e} for {name}; config.json does not match the weights") from None
            if stacked:
                host[i] = block
            else:
                host[...] = block
        target = flat_shardings[path]
        target = target.get_value() if isinstance(target, nnx.Variable) else target
        values[path] = jax.make_array_from_callback(var.shape, target, lambda idx, h=host: h[idx])
        del host
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise WeightsError(f"{len(missing)} parameters have no checkpoint tensor: {shown}; the checkpoint is incomplete")
    if plan:  # keys matched a rule, but this config builds no such parameter (e.g. biases it disables)
        keys = ", ".join(sorted(k for k, _ in plan.values())[:8])
        raise WeightsError(f"{len(plan)} checkpoint keys fill parameters config.json does not enable: {keys}; fix config.json")

    state = nnx.from_flat_state([(p, v.replace(values[p])) for p, v in nnx.to_flat_state(abs_state)])
    model = nnx.merge(graphdef, state)
    tok = load_tokenizer(directory) if tokenizer else None
    return Loaded(model, cfg, hf_cfg, tok, directory, mesh)


def load_tokenizer(directory: pathlib.Path) -> Any:
    """AutoTokenizer from the checkpoint directory, or None if it ships no tokenizer."""
    if not any((directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def main() -> int:
    """`python -m leeroo_jax.weights.loader DIR_OR_HUB_ID`: load and summarise a checkpoint."""
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m leeroo_jax.weights.loader DIR_OR_HUB_ID", file=sys.stderr)
        return 2
    loaded = load(sys.argv[1])
    n = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(loaded.model, nnx.Param)))
    print(f"{loaded.config.model_type}: {n / 1e6:.1f}M parameters from {loaded.path}")
    return 0


if __name__ == "__main__":
    run_main(main)
