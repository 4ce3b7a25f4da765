"""Loading Hugging Face folders into `Model`s, and creating fresh models.

Sources: a local HF folder (config.json + model.safetensors, sharded safetensors with an
index, or pytorch_model.bin), the built-in name `minilm` (the offline MiniLM asset), or a hub
id when the machine is online.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from apex_jax.errors import InputError, MissingInputError
from apex_jax.models import convert
from apex_jax.models.config import ArchConfig, from_hf
from apex_jax.models.encoder import Encoder, Head, Hooks
from apex_jax.models.model import Model

BUILTIN = ("minilm",)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A built-in name, a local folder, or a hub id -> a local HF folder."""
    name = str(name_or_path)
    if name in BUILTIN:
        from apex_jax import assets

        return assets.asset_path(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingInputError(
                f"{path} has no config.json; is it a Hugging Face model folder? Give a folder "
                "with config.json plus model.safetensors or pytorch_model.bin, a hub id, or one "
                f"of {list(BUILTIN)}."
            )
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise MissingInputError(
            f"model {name!r} is not a folder; give an HF folder, a hub id, or one of {list(BUILTIN)}."
        )
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise MissingInputError(
            f"model {name!r} is neither a local folder nor built in ({list(BUILTIN)}), and "
            "HF_HUB_OFFLINE is set, so it cannot be downloaded."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin", "tf_model.h5"]
        ))
    except Exception as e:  # offline, unknown repo, ...
        raise MissingInputError(
            f"model {name!r} is not a local folder or built-in name ({list(BUILTIN)}) and could not "
            f"be fetched from the hub: {e}"
        ) from e


def read_state(folder: Path) -> dict[str, np.ndarray]:
    """All weights of an HF folder as numpy arrays (no torch needed for safetensors).

    Raises:
        MissingInputError: no weights file, or a shard the index names is absent.
        InputError: a weights file is truncated or corrupt, or the shard index is malformed
            (the file is named).
    """
    single, index, torch_bin = (folder / "model.safetensors", folder / "model.safetensors.index.json",
                                folder / "pytorch_model.bin")
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        weight_map = read_json(index, "a sharded-weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(
                f"{index} has no 'weight_map' object mapping weight names to shard files; "
                "re-save the model with save_pretrained."
            )
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not (folder / f).is_file()]
        if absent:
            raise MissingInputError(
                f"{index} names shard files that are not in {folder}: {absent}; copy or "
                "download the missing shards."
            )
        state: dict[str, np.ndarray] = {}
        for f in files:
            state.update(_load_safetensors(folder / f))
        return state
    if torch_bin.is_file():
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{torch_bin} is a PyTorch pickle; install torch==2.13.0 to read it, or convert the "
                "folder to safetensors."
            ) from e
        try:
            sd = torch.load(str(torch_bin), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, not a checkpoint, unsafe pickle, ...
            raise InputError(
                f"{torch_bin} cannot be read as PyTorch weights ({type(e).__name__}: "
                f"{_first_line(e)}); it is truncated or corrupt: copy or download it again, or "
                "re-save the model with save_pretrained."
            ) from None
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    if (folder / "tf_model.h5").is_file():
        from apex_jax.models.tf_weights import read_tf_h5

        return read_tf_h5(folder / "tf_model.h5")
    raise MissingInputError(
        f"{folder} has no weights: expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or tf_model.h5."
    )


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """One safetensors file as numpy arrays; a damaged file is an InputError naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:  # truncated header/data, not safetensors
        raise InputError(
            f"{path} is not a readable safetensors file ({_first_line(e)}); it is truncated or "
            "corrupt (an interrupted download or copy?): copy or download it again, or re-save "
            "the model with save_pretrained."
        ) from None


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; errors name the file, the line and column, and `what` it is.

    Raises:
        InputError: unreadable as UTF-8, malformed JSON, or not a JSON object.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path} ({what}) is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path} ({what}) is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; "
            "fix the file or re-save the model with save_pretrained."
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{path} ({what}) must hold a JSON object {{...}}; got {type(value).__name__}.")
    return value


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _arch_config(hf: dict, config_path: Path) -> ArchConfig:
    """`from_hf`, with errors naming config.json: an unknown model_type lists the supported
    ones; a missing or malformed field is named."""
    try:
        return from_hf(hf)
    except KeyError as e:
        raise InputError(
            f"{config_path} lacks the field {e.args[0]!r} that a {hf.get('model_type')!r} config "
            "needs; the file is incomplete: re-save the model with save_pretrained."
        ) from None
    except (TypeError, ValueError) as e:
        raise InputError(f"{config_path}: {e}") from None


def load(
    name_or_path: str | os.PathLike,
    *,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    ignore: Iterable[str] = (),
    seed: int = 0,
    dtype: str = "float32",
) -> Model:
    """Loads an HF encoder (BERT, MiniLM, RoBERTa, DistilBERT, ViT) strictly.

    Args:
        name_or_path: `"minilm"`, a local HF folder, or a hub id (online only).
        num_labels: number of classes. A checkpoint with a classifier must agree with it; a
            checkpoint without one gets a freshly initialized head (seeded by `seed`), as
            `AutoModelForSequenceClassification` would; None keeps a head-less encoder.
        label_names: class names (default: the config's id2label, else LABEL_i).
        ignore: glob patterns of checkpoint weights to drop on purpose (e.g. `["cls.*"]` for
            the masked-LM head of a pre-training checkpoint). Any other unused weight is an error.
        seed: seed of a fresh head.
        dtype: precision, "float32" (default) or "bfloat16": parameters and activations in
            that type; softmax, LayerNorm/RMSNorm statistics and the logits stay float32.

    Raises:
        InputError: unknown model type (the supported ones are listed), a malformed or
            incomplete config.json, a truncated or corrupt weights file (named), missing /
            unused / mis-shaped weights (named), or num_labels disagreeing with the checkpoint.
        MissingInputError: no such folder, built-in or hub model; no weights file.
    """
    check_dtype(dtype)
    folder = resolve(name_or_path)
    hf = read_json(folder / "config.json", "the model's config")
    base = _arch_config(hf, folder / "config.json")
    state = convert.normalize_keys(base.arch, read_state(folder))
    if base.is_decoder:
        from apex_jax.models.decoder_loading import load_decoder

        return with_dtype(load_decoder(folder, hf, base, state, num_labels=num_labels,
                                       label_names=label_names, ignore=ignore, seed=seed,
                                       source=str(name_or_path)), dtype)
    head_key = "classifier.out_proj.weight" if base.arch == "roberta" else "classifier.weight"
    ckpt_classes = state[head_key].shape[0] if head_key in state else None
    if ckpt_classes is not None and num_labels is not None and num_labels != ckpt_classes:
        raise InputError(
            f"{folder} has a {ckpt_classes}-class classifier but num_labels={num_labels} was asked; "
            "drop num_labels, or remove the classifier weights to train a new head."
        )
    n_classes = ckpt_classes if ckpt_classes is not None else num_labels
    if n_classes is not None and n_classes < 1:
        raise InputError(f"num_labels must be >= 1; got {n_classes}.")
    has_pooler = "pooler.dense.weight" in state
    fresh = ckpt_classes is None and n_classes is not None
    if fresh and base.arch == "bert":
        has_pooler = True  # BertForSequenceClassification always has a pooler
    elif fresh and has_pooler:
        # RoBERTa/ViT base models carry a pooler their classifiers do not have; drop it as
        # `AutoModelFor*Classification` does, so a saved folder has exactly the classifier's keys.
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        has_pooler = False
    cfg = _replace(base, n_classes=n_classes, has_pooler=has_pooler)

    if fresh:  # fill the head (and a missing pooler) from a fresh init, like HF does
        init = {"head": init_head(cfg, seed)}
        for entry in convert.table(cfg):
            if entry.key not in state and entry.key.split(".")[0] in ("classifier", "pre_classifier", "pooler"):
                state[entry.key] = convert._to_hf(entry, np.asarray(convert._get(init, entry.path)))
    params = convert.to_params(cfg, state, ignore)

    names = label_names
    if names is None and "id2label" in hf and n_classes and len(hf["id2label"]) == n_classes and not fresh:
        names = [hf["id2label"][str(i)] for i in range(n_classes)]
    if names is not None and n_classes is not None and len(names) != n_classes:
        raise InputError(
            f"{len(names)} label names given for {n_classes} classes; give exactly one name per "
            "class, or none."
        )
    tokenizer, mean, std = _preprocessing(folder, cfg)
    model = Model(cfg, jax.tree.map(np.asarray, params), hf, tokenizer, mean, std, names, str(name_or_path))
    return with_dtype(model, dtype)


def create(hf_config: dict, *, num_labels: int | None, label_names: Sequence[str] | None = None,
           seed: int = 0, tokenizer: Any = None, lm_head: bool = False, dtype: str = "float32") -> Model:
    """A randomly initialized model from an HF config dict (e.g. a small ViT to train).

    Decoders (model_type gpt2 / llama / qwen2 / mistral): `num_labels` gives a `score` head,
    `lm_head=True` the next-token head instead, neither a head-less model. `dtype` as in `load`
    (the parameters are initialized in float32, then cast).
    """
    check_dtype(dtype)
    base = from_hf(hf_config)
    if base.is_decoder:
        from apex_jax.models.decoder_loading import create_decoder

        return with_dtype(create_decoder(hf_config, base, num_labels=num_labels, lm_head=lm_head,
                                         label_names=label_names, seed=seed, tokenizer_=tokenizer), dtype)
    cfg = _replace(from_hf(hf_config), n_classes=num_labels, has_pooler=from_hf(hf_config).arch == "bert")
    return with_dtype(Model(cfg, init_params(cfg, seed), hf_config, tokenizer, label_names=label_names,
                            source="<new>"), dtype)


def check_dtype(dtype: str) -> None:
    from apex_jax.models.config import DTYPES

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}.")


def with_dtype(model: Model, dtype: str) -> Model:
    """`model` in precision `dtype`: its config says so and its floating parameters are cast
    (float32 returns the model itself, untouched)."""
    check_dtype(dtype)
    if dtype == model.config.dtype:
        return model
    cfg = _replace(model.config, dtype=dtype)
    target = cfg.compute_dtype

    def cast(a):
        a = np.asarray(a)
        return a.astype(target) if np.issubdtype(a.dtype, np.floating) or a.dtype == target else a

    params = jax.tree.map(cast, model.params)
    return Model(cfg, params, model.hf_config, model.tokenizer, model.image_mean, model.image_std,
                 model.label_names, model.source)


def init_params(cfg: ArchConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) for a model described by `cfg`."""
    if cfg.is_text:
        dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    else:
        s = cfg.image_size
        dummy = {"pixel_values": np.zeros((1, cfg.num_channels, s, s), np.float32)}
    hooks = Hooks({}, frozenset(), {})
    variables = Encoder(cfg).init(jax.random.key(seed), dummy, hooks)
    params = jax.tree.map(np.asarray, dict(variables["params"]))
    if cfg.has_pooler and "pooler" not in params.get("head", {}):
        # The pooler of a head-less BERT/ViT is never called, so Linen did not create it.
        rng = np.random.default_rng(seed)
        params.setdefault("head", {})["pooler"] = {
            "kernel": rng.normal(0, 0.02, (cfg.d_model, cfg.d_model)).astype(np.float32),
            "bias": np.zeros((cfg.d_model,), np.float32),
        }
    return params


def init_head(cfg: ArchConfig, seed: int) -> dict:
    """Fresh parameters of the classification head alone (pooler / dense / pre_classifier and
    classifier): a Linen init of `Head` on a dummy [1, d_model] vector, milliseconds, where
    `init_params` runs the whole model."""
    hooks = Hooks({}, frozenset(), {})
    variables = Head(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), hooks)
    return jax.tree.map(np.asarray, dict(variables["params"]))


def _replace(cfg: ArchConfig, **kw) -> ArchConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def _preprocessing(folder: Path, cfg: ArchConfig):
    if cfg.is_text:
        has_tok = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json"))
        if not has_tok:
            return None, None, None
        from apex_jax.models.hf_import import transformers

        AutoTokenizer = transformers().AutoTokenizer
        # Never BertTokenizer(vocab_file=...): transformers 5 silently ignores it (STACK-NOTES).
        try:
            return AutoTokenizer.from_pretrained(str(folder)), None, None
        except Exception as e:  # a corrupt tokenizer.json, a vocab the tokenizer class rejects
            raise InputError(
                f"the tokenizer files in {folder} cannot be loaded ({type(e).__name__}: "
                f"{_first_line(e)}); copy them again from the model's source (tokenizer.json, "
                "tokenizer_config.json, vocab.txt / vocab.json + merges.txt)."
            ) from None
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = read_json(pre, "the image preprocessing config")
        return None, p.get("image_mean"), p.get("image_std")
    return None, None, None
