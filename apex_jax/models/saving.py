"""Writing a model as a Hugging Face folder (`Model.save`).

The folder holds config.json (the HF config the model was read from, with the class and labels
of its head), model.safetensors (float32, HF's names and layouts: `families.from_params`), the
tokenizer files and, for image models, preprocessor_config.json; `transformers` and `load` read
it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from apex_jax.errors import resource_error
from apex_jax.fileio import check_room
from apex_jax.models import families


def save(model: Any, path: str | os.PathLike, params: Any = None) -> Path:
    """Writes an HF folder (config.json, model.safetensors, tokenizer) that `transformers` loads.

    Files of `path` that the folder does not hold are left alone; the ones it holds are
    replaced whole (atomic renames), so an interrupted save leaves no truncated file.

    Args:
        model: the `Model` to write.
        path: the folder (created if absent).
        params: parameters to write instead of `model.params` (e.g. after training).

    Returns:
        `path`.
    """
    path = Path(path)
    leaves = jax.tree.leaves(model.params if params is None else params)
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_room(path, sum(int(a.size) * 4 for a in leaves))  # written as float32
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise resource_error(e, path) from e
    # Written into a temporary folder beside `path`, then each file renamed into place
    # (config.json last): an interrupted save never leaves a half-written file.
    try:
        write_folder(model, tmp, params)
        names = sorted(f.name for f in tmp.iterdir())
        for name in sorted(names, key=lambda n: n == "config.json"):
            os.replace(tmp / name, path / name)
    except OSError as e:
        raise resource_error(e, path) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_folder(model: Any, path: Path, params: Any = None) -> None:
    """Writes the folder's files into `path` directly (`save` renames them into place)."""
    params = jax.device_get(model.params if params is None else params)
    if model.config.dtype != "float32":  # HF folders hold float32 here (bfloat16 casts back exactly)
        params = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "V"
                              or np.issubdtype(np.asarray(a).dtype, np.floating) else a, params)
    state = families.from_params(model.config, params)
    cfg = dict(model.hf_config)
    cfg.pop("_name_or_path", None)
    if model.config.is_decoder:
        cfg["architectures"] = [families.hf_class_name(model.config)]
        if model.config.n_classes is not None and not model.config.lm_head:
            cfg["num_labels"] = model.config.n_classes
            cfg["id2label"] = {str(i): n for i, n in enumerate(model.label_names)}
            cfg["label2id"] = {n: i for i, n in enumerate(model.label_names)}
            if cfg.get("pad_token_id") is None:  # HF's score reader needs one to find the last token
                cfg["pad_token_id"] = model.config.eos_token_id
    elif model.config.n_classes is not None:
        cfg["architectures"] = [families.hf_class_name(model.config)]
        cfg["num_labels"] = model.config.n_classes
        cfg["id2label"] = {str(i): n for i, n in enumerate(model.label_names)}
        cfg["label2id"] = {n: i for i, n in enumerate(model.label_names)}
    safetensors.numpy.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path))
    if not model.config.is_text:
        pre = {
            "image_processor_type": "ViTImageProcessor", "do_resize": False,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(model.image_mean), "image_std": list(model.image_std),
        }
        (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
