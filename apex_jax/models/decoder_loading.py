"""Loading HF decoder folders (GPT-2, Llama, Qwen2, Mistral) and creating fresh decoders.

Which head a folder gets:
  * a `score` weight (`*ForSequenceClassification`): that classifier (num_labels must agree);
  * a causal LM (`*ForCausalLM` / `GPT2LMHeadModel`, or an `lm_head` weight): the next-token
    head, logits [batch, vocab] at the classifier token, unless `num_labels` is given: then a
    fresh `score` head replaces it, as `AutoModelForSequenceClassification` does;
  * a base model: a fresh `score` head with `num_labels`, else no head.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from apex_jax.models import convert
from apex_jax.models.decoder import Decoder, DecoderHead, prepare_tokenizer
from apex_jax.models.decoder_config import DecoderConfig
from apex_jax.models.encoder import Hooks
from apex_jax.models.model import Model
from apex_jax.errors import InputError

_LM_CLASSES = ("ForCausalLM", "LMHeadModel")


def load_decoder(folder: Path, hf: dict, base: DecoderConfig, state: dict[str, np.ndarray], *,
                 num_labels: int | None, label_names: Sequence[str] | None, ignore: Iterable[str],
                 seed: int, source: str) -> Model:
    """A strict decoder load from an already read (`convert.normalize_keys`-ed) state dict."""
    fresh = False  # a new, untrained score head
    is_lm = "lm_head.weight" in state or any(a.endswith(_LM_CLASSES) for a in hf.get("architectures") or [])
    if "score.weight" in state:
        n = state["score.weight"].shape[0]
        if num_labels is not None and num_labels != n:
            raise InputError(
                f"{folder} has a {n}-class score head but num_labels={num_labels} was asked; drop "
                "num_labels, or remove the score weights to train a new head."
            )
        cfg = dataclasses.replace(base, n_classes=n)
    elif is_lm and num_labels is None:
        cfg = dataclasses.replace(base, n_classes=base.vocab_size, lm_head=True)
        if base.tie_embeddings and "lm_head.weight" in state:
            # A tied head saved twice: it must be the embedding, then it carries nothing new.
            lm, emb = state.pop("lm_head.weight"), state.get("embed_tokens.weight", state.get("wte.weight"))
            if emb is None or lm.shape != emb.shape or not np.array_equal(lm, emb):
                raise InputError(
                    f"{folder}: tie_word_embeddings is set but lm_head.weight differs from the token "
                    "embedding; set tie_word_embeddings=false in config.json to load an untied head."
                )
    else:
        cfg = dataclasses.replace(base, n_classes=num_labels)
        if num_labels is not None:
            if num_labels < 1:
                raise InputError(f"num_labels must be >= 1; got {num_labels}.")
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # replaced by `score`
            kernel = init_head(cfg, seed)["score"]["kernel"]
            state["score.weight"] = np.ascontiguousarray(kernel.T)
            fresh = True
    params = convert.to_params(cfg, state, ignore)
    names = label_names
    if names is None and not cfg.lm_head and cfg.n_classes and len(hf.get("id2label") or {}) == cfg.n_classes and not fresh:
        names = [hf["id2label"][str(i)] for i in range(cfg.n_classes)]
    if names is not None and cfg.n_classes is not None and len(names) != cfg.n_classes:
        raise InputError(f"{len(names)} label names given for {cfg.n_classes} classes.")
    return Model(cfg, jax.tree.map(np.asarray, params), hf, tokenizer(folder), label_names=names, source=source)


def create_decoder(hf_config: dict, base: DecoderConfig, *, num_labels: int | None, lm_head: bool,
                   label_names: Sequence[str] | None, seed: int, tokenizer_: Any) -> Model:
    """A randomly initialized decoder: a `score` head with `num_labels` classes, or the
    next-token head (`lm_head=True`), or none."""
    if lm_head and num_labels is not None:
        raise InputError("give num_labels (a score head) or lm_head=True, not both.")
    n = base.vocab_size if lm_head else num_labels
    cfg = dataclasses.replace(base, n_classes=n, lm_head=lm_head)
    tok = prepare_tokenizer(tokenizer_) if tokenizer_ is not None else None
    return Model(cfg, init_params(cfg, seed), hf_config, tok, label_names=label_names, source="<new>")


def init_params(cfg: DecoderConfig, seed: int) -> Any:
    """Fresh parameters (Linen init) of a decoder."""
    dummy = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.ones((1, 2), np.int32)}
    variables = Decoder(cfg).init(jax.random.key(seed), dummy, Hooks({}, frozenset(), {}))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def init_head(cfg: DecoderConfig, seed: int) -> dict:
    """Fresh parameters of the head alone (`score` kernel [d_model, n_classes])."""
    hooks = Hooks({}, frozenset(), {})
    variables = DecoderHead(cfg).init(jax.random.key(seed), np.zeros((1, cfg.d_model), np.float32), hooks)
    return jax.tree.map(np.asarray, dict(variables["params"]))


def tokenizer(folder: Path) -> Any:
    """AutoTokenizer of the folder, right-padded with eos as pad when it has no pad token; None
    without tokenizer files."""
    files = ("tokenizer.json", "vocab.json", "tokenizer.model")
    if not any((folder / f).is_file() for f in files):
        return None
    from apex_jax.models.hf_import import transformers

    return prepare_tokenizer(transformers().AutoTokenizer.from_pretrained(str(folder)))


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
