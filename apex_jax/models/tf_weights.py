"""Reading Hugging Face TensorFlow checkpoints (`tf_model.h5`) without TensorFlow.

`transformers`' TF `save_pretrained` writes a Keras HDF5 weights file: the root attribute
`layer_names` lists one group per top-level Keras layer (`bert`, `dropout_37`, `classifier`),
each group's attribute `weight_names` lists its variables by their full TF names, and each
variable is the dataset `<layer>/<weight name>`, e.g.

    bert/tf_bert_for_sequence_classification/bert/encoder/layer_._0/attention/self/query/kernel:0

`read_tf_h5` renames these to PyTorch state-dict keys with the same rules as transformers'
`convert_tf_weight_name_to_pt_weight_name` (transformers 4.x, `modeling_tf_pytorch_utils.py`)
and transposes kernels, so the result feeds `families.normalize_keys` / `families.to_params` like
a safetensors state dict. Only h5py is needed (TensorFlow is not).

Supported: single-file Keras HDF5 weights of BERT-family encoders (BERT, RoBERTa, DistilBERT,
ViT, and heads made of Dense layers, e.g. sequence classification, masked LM via `mlm___cls`).
Not supported (ValueError naming the dataset): Conv1D (3-d) kernels, separable / depthwise
convolutions, BatchNorm statistics, and any other variable name outside the rules below;
sharded TF checkpoints (`tf_model.h5.index.json`) and Keras SavedModel folders are not read.
"""

from __future__ import annotations

import re
from os import PathLike
from typing import Any

import numpy as np

from apex_jax.errors import InputError

# Last name component -> PyTorch name. Anything not listed is rejected: guessing (as
# transformers does, keeping unknown names and not transposing) could hide a layout error.
_LEAF = {
    "kernel": "weight",  # Dense / Conv2D kernel, transposed below
    "gamma": "weight",  # LayerNorm scale
    "beta": "bias",  # LayerNorm shift
    "embeddings": "weight",  # tf.keras Embedding table (position / token-type embeddings)
    "weight": "weight",  # HF's own embedding tables (word_embeddings/weight)
    "bias": "bias",
    # ViT parameters that are plain variables in both frameworks, same layout.
    "cls_token": "cls_token",
    "position_embeddings": "position_embeddings",
    "mask_token": "mask_token",
}
# Kernel rank -> axis order turning a TF kernel into the PyTorch weight.
_KERNEL_AXES = {
    2: (1, 0),  # Dense: TF [in, out] -> PT Linear [out, in]
    4: (3, 2, 0, 1),  # Conv2D: TF [kh, kw, in, out] -> PT [out, in, kh, kw] (ViT patch embedding)
}


def tf_name_to_pt(tf_name: str) -> tuple[str, bool] | None:
    """Maps one TF variable name to its PyTorch key; None if a rule does not cover it.

    Rules, in order (those of transformers' `convert_tf_weight_name_to_pt_weight_name`):
    drop the `:0` device suffix; `a___b` scopes become `b` (TF-only wrapper layers such as
    `mlm___cls`); `_._` becomes a level separator (`layer_._3` -> `layer/3`); the first level
    (the model scope, e.g. `tf_bert_for_sequence_classification`) is dropped; the last level is
    renamed by `_LEAF`; levels are joined with `.`.

    Args:
        tf_name: Full TF variable name, e.g.
            `tf_bert_for_sequence_classification/bert/embeddings/LayerNorm/gamma:0`.

    Returns:
        (PyTorch key, whether the value is a kernel to transpose), or None when the last level
        is not one of `_LEAF`.
    """
    name = re.sub(r":\d+$", "", tf_name)
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = name.replace("_._", "/")
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1:
        parts = parts[1:]  # the model scope; the PyTorch keys start at the base model prefix
    leaf = _LEAF.get(parts[-1]) if parts else None
    if leaf is None:
        return None
    return ".".join(parts[:-1] + [leaf]), parts[-1] == "kernel"


def read_tf_h5(path: str | PathLike) -> dict[str, np.ndarray]:
    """All weights of a transformers TF checkpoint, under PyTorch state-dict names.

    Dense kernels are transposed to PyTorch's [out, in], Conv2D kernels to
    [out, in, height, width]; arrays keep their stored dtype.

    Args:
        path: A `tf_model.h5` written by a transformers TF model's `save_pretrained`.

    Returns:
        {PyTorch key: array}, e.g. `bert.encoder.layer.0.attention.self.query.weight`,
        `bert.embeddings.position_embeddings.weight`, `classifier.weight`.

    Raises:
        ImportError: h5py is not installed.
        InputError: (a ValueError) the file is not a readable Keras HDF5 weights file, or a dataset has a name or
            shape the rules do not cover (the dataset is named), or two datasets map to the
            same key.
    """
    try:
        import h5py  # optional (the `tf` extra): only tf_model.h5 folders need it
    except ImportError as e:
        raise ImportError(
            f"{path} is a TensorFlow checkpoint; reading it needs h5py: pip install h5py"
        ) from e

    state: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:  # truncated, not HDF5 at all, ...
        raise InputError(
            f"{path} cannot be read as an HDF5 file ({e}); it is truncated or corrupt: copy or "
            "download it again, or re-save the model with save_pretrained."
        ) from None
    with f:
        if "layer_names" not in f.attrs:
            raise InputError(
                f"{path} has no 'layer_names' attribute, so it is not a Keras HDF5 weights file "
                "as transformers' TF save_pretrained writes (sharded TF checkpoints and Keras "
                "full-model saves are not supported)."
            )
        layers = [_text(n) for n in f.attrs["layer_names"]]
        # Keras >= 2.x keeps weights owned by the model itself (not a layer) here.
        if "top_level_model_weights" in f and "top_level_model_weights" not in layers:
            layers.append("top_level_model_weights")
        for layer in layers:
            group = f[layer]
            for weight_name in (_text(n) for n in group.attrs.get("weight_names", ())):
                dataset = f"{layer}/{weight_name}"
                value = np.asarray(group[weight_name])
                mapped = tf_name_to_pt(weight_name)
                if mapped is None:
                    raise InputError(
                        f"{path}: h5 dataset {dataset!r} has a variable name apex_jax does not map "
                        f"to PyTorch (last level must be one of {sorted(_LEAF)})."
                    )
                key, is_kernel = mapped
                if is_kernel:
                    axes = _KERNEL_AXES.get(value.ndim)
                    if axes is None:
                        raise InputError(
                            f"{path}: h5 dataset {dataset!r} is a {value.ndim}-d kernel "
                            f"{value.shape}; only Dense (2-d) and Conv2D (4-d) kernels are supported."
                        )
                    value = np.ascontiguousarray(value.transpose(axes))
                if key in state:
                    raise InputError(
                        f"{path}: h5 datasets {source[key]!r} and {dataset!r} both map to {key!r}."
                    )
                state[key], source[key] = value, dataset
    return state


def _text(value: Any) -> str:
    # h5py returns attribute strings as bytes or str depending on how Keras wrote them.
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
