"""Loading Hugging Face folders into `Model`s, creating fresh models, and verbalizers.

Sources: a local HF folder (config.json + model.safetensors, sharded safetensors with an
index, pytorch_model.bin or tf_model.h5), the built-in name `minilm` (the offline MiniLM asset),
or a hub id when the machine is online. `load` and `create` dispatch over the families through
`families` (config mapping, weight tables) and the encoder / decoder modules (heads, fresh
parameters); `verbalizer` reads a causal LM as a classifier.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from safetensors import SafetensorError, safe_open

from apex_jax import assets
from apex_jax.engine.mesh import param_specs, sweep_mesh
from apex_jax.errors import InputError, MissingInputError
from apex_jax.models import decoder, encoder, families
from apex_jax.models.common import DTYPES
from apex_jax.models.convert import get_path, set_path
from apex_jax.models.hf_import import transformers
from apex_jax.models.model import Model
from apex_jax.models.tf_weights import read_tf_h5

Config = families.Config

BUILTIN = ("minilm", "smollm2")  # asset names (apex_jax.assets); smollm2 is a causal LM


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A built-in name, a local folder, or a hub id -> a local HF folder."""
    name = str(name_or_path)
    if name in BUILTIN:
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
    from huggingface_hub import snapshot_download  # only for hub ids: not imported offline

    try:
        return Path(snapshot_download(
            name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin", "tf_model.h5"]
        ))
    except Exception as e:  # offline, unknown repo, ...
        raise MissingInputError(
            f"model {name!r} is not a local folder or built-in name ({list(BUILTIN)}) and could not "
            f"be fetched from the hub: {e}"
        ) from e


def read_state(folder: Path) -> dict[str, Any]:
    """All weights of an HF folder (no torch needed for safetensors).

    Safetensors weights are `LazyTensor`s: only their shape and dtype are read here; the bytes of
    one are read when it is converted (`np.asarray`), so loading never holds the whole checkpoint
    on the host. Other formats (PyTorch pickles, TF h5) are read whole into numpy arrays.

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
        state: dict[str, Any] = {}
        for f in files:
            state.update(_load_safetensors(folder / f))
        return state
    if torch_bin.is_file():
        try:
            import torch  # optional, heavy: only legacy pickles need it
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
        return read_tf_h5(folder / "tf_model.h5")
    raise MissingInputError(
        f"{folder} has no weights: expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or tf_model.h5."
    )


class LazyTensor:
    """One tensor of a safetensors file, read on demand: `shape` and `dtype` from the header;
    `np.asarray(t)` (or `t.read()`) reads its bytes, in the stored dtype (bf16 as `ml_dtypes`
    bfloat16), through a memory map that is closed again right after."""

    __slots__ = ("path", "key", "shape", "dtype")

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: str) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self) -> np.ndarray:
        """The tensor as a numpy array of its own (the file is mapped only while reading it).

        Raises:
            InputError: the file is truncated or corrupt (named).
        """
        try:
            with safe_open(str(self.path), framework="numpy") as f:
                return f.get_tensor(self.key)
        except (SafetensorError, OSError, ValueError) as e:
            raise _unreadable(self.path, e) from None

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        value = self.read()
        return value if dtype is None else value.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyTensor({self.key!r}, shape={self.shape}, dtype={self.dtype}, file={self.path.name})"


def _load_safetensors(path: Path) -> dict[str, LazyTensor]:
    """One safetensors file's tensors as `LazyTensor`s (its header only is read now); a damaged
    file is an InputError naming it."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            out = {}
            for key in f.keys():
                info = f.get_slice(key)
                out[key] = LazyTensor(path, key, tuple(info.get_shape()), str(info.get_dtype()))
            return out
    except (SafetensorError, OSError, ValueError) as e:  # truncated header/data, not safetensors
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: BaseException) -> InputError:
    return InputError(
        f"{path} is not a readable safetensors file ({_first_line(e)}); it is truncated or "
        "corrupt (an interrupted download or copy?): copy or download it again, or re-save "
        "the model with save_pretrained."
    )


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


def _arch_config(hf: dict, config_path: Path) -> Config:
    """`families.from_hf`, with errors naming config.json: an unknown model_type lists the supported
    ones; a missing or malformed field is named."""
    try:
        return families.from_hf(hf)
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
    model_parallel: int = 1,
) -> Model:
    """Loads an HF model (encoders, GPT-2, the Llama family) strictly, in bounded memory.

    Safetensors checkpoints are streamed: each weight is read from its memory-mapped file,
    converted in `dtype` (a bf16 weight goes straight to bf16) and placed on its device(s) before
    the next is read, so no full host copy of the model is built: on CPU the peak RSS of a bf16
    load in bf16 stays below 1.5x the checkpoint's bytes (tests/test_loading_memory.py).

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
        model_parallel: devices each weight is split over, as `engine.shard_params` splits
            them on `engine.sweep_mesh(model_parallel)` (each weight goes straight to its shards);
            1 places every weight whole on the default device.

    Raises:
        InputError: unknown model type (the supported ones are listed), a malformed or
            incomplete config.json, a model_parallel that does not divide the devices, a truncated or corrupt weights file (named), missing /
            unused / mis-shaped weights (named), or num_labels disagreeing with the checkpoint.
        MissingInputError: no such folder, built-in or hub model; no weights file.
    """
    check_dtype(dtype)
    place = _placer(model_parallel)
    _return_large_frees()
    folder = resolve(name_or_path)
    hf = read_json(folder / "config.json", "the model's config")
    base = _arch_config(hf, folder / "config.json")
    state = families.normalize_keys(base.arch, read_state(folder))
    if base.is_decoder:
        cfg, state, fresh = decoder.load_head(folder, hf, base, state, num_labels=num_labels, seed=seed)
    else:
        # each encoder family's own head rules (`encoder.load_head` and its like)
        cfg, state, fresh = families.family(base).load_head(folder, base, state, num_labels=num_labels, seed=seed)
    cfg = dataclasses.replace(cfg, dtype=dtype)
    params = families.to_params(cfg, state, ignore, place)
    del state

    names = label_names
    n_classes = cfg.n_classes
    id2label = hf.get("id2label") or {}
    if (not getattr(cfg, "lm_head", False) and n_classes and not fresh and id2label
            and len(id2label) != n_classes):
        raise InputError(f"{folder / 'config.json'}: id2label names {len(id2label)} classes but the classifier "
                         f"head has {n_classes} rows; give id2label (and label2id) one entry per row")
    if (names is None and not getattr(cfg, "lm_head", False) and n_classes and not fresh
            and len(hf.get("id2label") or {}) == n_classes):
        names = [hf["id2label"][str(i)] for i in range(n_classes)]
    if names is not None and n_classes is not None and len(names) != n_classes:
        raise InputError(
            f"{len(names)} label names given for {n_classes} classes; give exactly one name per "
            "class, or none."
        )
    if base.is_decoder:
        tokenizer, mean, std = _decoder_tokenizer(folder), None, None
    else:
        tokenizer, mean, std = _preprocessing(folder, cfg)
    return Model(cfg, params, hf, tokenizer, mean, std, names, str(name_or_path))


@functools.cache
def _return_large_frees() -> None:
    """Makes glibc serve blocks of 1 MiB and more by mmap (so freeing one returns it to the OS).

    By default glibc raises its mmap threshold to the size of each large block freed (up to
    32 MiB), after which the per-weight host copies come from its heaps, where the device
    buffers allocated between them pin them: the freed copies then stay resident and a streamed
    load peaked at 1.57x the checkpoint instead of 1.24x (tests/test_loading_memory.py's model).
    A no-op outside glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _placer(model_parallel: int) -> Any:
    """`place(path, host array) -> jax.Array` for `convert.to_params`: the whole weight on the
    default device, or its shards on `sweep_mesh(model_parallel)` split by the engine's rules
    (`engine.mesh.param_specs`), each device receiving only its slice.

    Raises:
        InputError: model_parallel is not a positive divisor of the device count.
    """
    mesh = sweep_mesh(model_parallel)  # validates model_parallel
    if model_parallel == 1:
        return lambda path, host: jax.device_put(host)

    def place(path: tuple[str, ...], host: np.ndarray) -> jax.Array:
        tree: dict = {}
        set_path(tree, path, host)
        spec = get_path(param_specs(tree, model_parallel), path)
        return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda index: host[index])

    return place


def create(hf_config: dict, *, num_labels: int | None, label_names: Sequence[str] | None = None,
           seed: int = 0, tokenizer: Any = None, lm_head: bool = False, dtype: str = "float32") -> Model:
    """A randomly initialized model from an HF config dict (e.g. a small ViT to train).

    Decoders (model_type gpt2 / llama / qwen2 / mistral): `num_labels` gives a `score` head,
    `lm_head=True` the next-token head instead, neither a head-less model. `dtype` as in `load`
    (the parameters are initialized in float32, then cast).
    """
    check_dtype(dtype)
    base = families.from_hf(hf_config)
    if base.is_decoder:
        cfg = decoder.with_head(base, num_labels=num_labels, lm_head=lm_head)
        tok = decoder.prepare_tokenizer(tokenizer) if tokenizer is not None else None
        model = Model(cfg, decoder.init_params(cfg, seed), hf_config, tok, label_names=label_names, source="<new>")
    else:
        fam = families.family(base)
        cfg = fam.with_head(base, num_labels)
        model = Model(cfg, fam.init_params(cfg, seed), hf_config, tokenizer, label_names=label_names,
                      source="<new>")
    return with_dtype(model, dtype)


def check_dtype(dtype: str) -> None:
    """Raises InputError unless `dtype` is one of `common.DTYPES`."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}.")


def with_dtype(model: Model, dtype: str) -> Model:
    """`model` in precision `dtype`: its config says so and its floating parameters are cast
    (float32 returns the model itself, untouched)."""
    check_dtype(dtype)
    if dtype == model.config.dtype:
        return model
    cfg = dataclasses.replace(model.config, dtype=dtype)
    target = cfg.compute_dtype

    def cast(a):
        a = np.asarray(a)
        return a.astype(target) if np.issubdtype(a.dtype, np.floating) or a.dtype == target else a

    params = jax.tree.map(cast, model.params)
    return Model(cfg, params, model.hf_config, model.tokenizer, model.image_mean, model.image_std,
                 model.label_names, model.source)


def _preprocessing(folder: Path, cfg: encoder.ArchConfig) -> tuple[Any, Any, Any]:
    """An encoder's (tokenizer, image mean, image std) from its folder's files (None if absent)."""
    if cfg.is_text:
        has_tok = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json"))
        if not has_tok:
            return None, None, None
        AutoTokenizer = transformers().AutoTokenizer
        # Never BertTokenizer(vocab_file=...): transformers 5 silently ignores it.
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


def _decoder_tokenizer(folder: Path) -> Any:
    """AutoTokenizer of the folder, right-padded with eos as pad when it has no pad token; None
    without tokenizer files."""
    files = ("tokenizer.json", "vocab.json", "tokenizer.model")
    if not any((folder / f).is_file() for f in files):
        return None
    return decoder.prepare_tokenizer(transformers().AutoTokenizer.from_pretrained(str(folder)))


def verbalizer(model: Model, labels: Sequence[str | int], *, prompt: str = "{text}",
               label_names: Sequence[str] | None = None) -> Model:
    """A causal LM read as a classifier through label tokens ("verbalizer").

    The class logits are the next-token logits of the label tokens at the classifier token (the
    last real token of the prompt), so `head.hook_logits` is [batch, n_classes] and APEX and
    SYNAPSE run on it unchanged; the head computes those columns only. Same parameters (saving
    writes the full causal LM; the verbalizer is not an HF notion).

        clf = verbalizer(lm, [" negative", " positive"], prompt="Review: {text}\\nSentiment:")
        clf.apply(clf.params, clf.encode(["a fine film"])).logits   # [1, 2]

    Args:
        model: a causal LM (`apex_jax.load` of a `*ForCausalLM` folder).
        labels: one word per class, each a single token of the model's tokenizer (mind the
            leading space of BPE vocabularies: " positive"), or token ids.
        prompt: template that `encode` fills (`{text}` = the input); it should end right before
            the label word.
        label_names: class names (default: the label words).

    Raises:
        ValueError: not a causal LM, a label that is not exactly one token, repeated labels.
    """
    cfg = model.config
    if not getattr(cfg, "lm_head", False):
        raise InputError(f"a verbalizer needs a causal LM (a next-token head); {model!r} has none.")
    if "{text}" not in prompt:
        raise InputError(f"the prompt template must contain '{{text}}'; got {prompt!r}.")
    ids = []
    for label in labels:
        if isinstance(label, (int, np.integer)):
            ids.append(int(label))
            continue
        if model.tokenizer is None:
            raise InputError(f"{model.source!r} has no tokenizer: give the label token ids instead of words.")
        toks = model.tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            pieces = model.tokenizer.convert_ids_to_tokens(toks)
            raise InputError(
                f"label {label!r} is {len(toks)} tokens {pieces}; each label must be one token (BPE "
                "vocabularies usually want a leading space, e.g. ' positive')."
            )
        ids.append(toks[0])
    bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
    if bad or len(set(ids)) != len(ids) or len(ids) < 2:
        raise InputError(f"label token ids {ids} must be >= 2 distinct ids in [0, {cfg.vocab_size}).")
    names = list(label_names) if label_names is not None else [str(x) for x in labels]
    if len(names) != len(ids):
        raise InputError(f"{len(names)} label names given for {len(ids)} labels.")
    new = dataclasses.replace(cfg, n_classes=len(ids), label_token_ids=tuple(ids), prompt=prompt)
    return Model(new, model.params, model.hf_config, model.tokenizer, label_names=names, source=model.source)
