"""apex_jax.gguf_folder without a GGUF file: the q/k row order, the config mapping and its
refusals, the tokenizer rebuilt from metadata. (The whole conversion of the real file is checked
through the `smollm2` asset in test_real_decoder.py: transformers reads the folder it writes.)"""

from __future__ import annotations

import numpy as np
import pytest

from apex_jax import gguf_folder
from apex_jax.errors import InputError
from apex_jax.models import families


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter's q/k row order (written from its definition): per head, row r of
    the first half next to row r of the second half."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_half(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """HF's rotary embedding: dimension i pairs with i + d/2. x [pos, heads, d]."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, d, 2) / d)  # [pos, d/2]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)


def _rope_pairs(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """llama.cpp's rotary embedding: dimension 2i pairs with 2i + 1."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def test_unpermute_rows_gives_hf_attention_scores():
    """Un-permuted q/k weights under HF's rotate-half rope give the attention scores that the
    GGUF's weights give under llama.cpp's adjacent-pair rope (grouped-query: 4 q heads, 2 kv)."""
    rng = np.random.default_rng(0)
    d_model, d_head, hq, hkv, n, theta = 12, 8, 4, 2, 5, 1e4
    wq_hf, wk_hf = rng.normal(size=(hq * d_head, d_model)), rng.normal(size=(hkv * d_head, d_model))
    wq_gguf, wk_gguf = _llama_cpp_permute(wq_hf, hq), _llama_cpp_permute(wk_hf, hkv)
    np.testing.assert_array_equal(gguf_folder.unpermute_rows(wq_gguf, hq), wq_hf)
    np.testing.assert_array_equal(gguf_folder.unpermute_rows(wk_gguf, hkv), wk_hf)
    x, pos = rng.normal(size=(n, d_model)), np.arange(n, dtype=np.float64)

    def scores(wq, wk, rope):
        q = rope((x @ wq.T).reshape(n, hq, d_head), pos, theta)
        k = np.repeat(rope((x @ wk.T).reshape(n, hkv, d_head), pos, theta), hq // hkv, axis=1)
        return np.einsum("qhd,khd->hqk", q, k)

    want = scores(wq_gguf, wk_gguf, _rope_pairs)
    got = scores(gguf_folder.unpermute_rows(wq_gguf, hq), gguf_folder.unpermute_rows(wk_gguf, hkv), _rope_half)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    wrong = scores(wq_gguf, wk_gguf, _rope_half)  # the GGUF order read as HF's: other scores
    assert np.abs(wrong - want).max() > 1e-2


TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>", "1", "2", "3", "Ġ", "ĠĠ", "h", "i", "Ġh", "hi",
          "Ġhi", "!"]
META = {
    "general.architecture": "llama", "general.name": "tiny",
    "llama.block_count": 2, "llama.context_length": 64, "llama.embedding_length": 16,
    "llama.feed_forward_length": 32, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
    "llama.rope.freq_base": 1e5, "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "llama.vocab_size": len(TOKENS), "llama.rope.dimension_count": 4,
    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": TOKENS,
    "tokenizer.ggml.token_type": [3, 3, 3, 4] + [1] * (len(TOKENS) - 4),
    "tokenizer.ggml.merges": ["Ġ Ġ", "Ġ h", "Ġh i", "h i"],
    "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
    "tokenizer.ggml.padding_token_id": 2, "tokenizer.ggml.add_bos_token": False,
    "tokenizer.chat_template": "{{ messages }}",
}


def test_config_from_metadata_is_read_by_transformers_and_apex_jax():
    import transformers

    cfg = gguf_folder.hf_config(META, tied=True)
    hf = transformers.LlamaConfig(**cfg)
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_key_value_heads, hf.head_dim, hf.vocab_size) == (2, 16, 2, 4,
                                                                                                          15)
    assert hf.rope_parameters["rope_theta"] == 1e5 and hf.tie_word_embeddings and hf.rms_norm_eps == 1e-5
    ours = families.from_hf(cfg)
    assert (ours.n_layers, ours.d_model, ours.n_heads, ours.n_kv_heads, ours.d_head, ours.rope_theta) == (
        2, 16, 4, 2, 4, 1e5)


def test_what_is_not_converted_is_refused():
    with pytest.raises(InputError, match="architecture 'qwen2' is not supported; supported: llama"):
        gguf_folder.hf_config({**META, "general.architecture": "qwen2"}, tied=True)
    with pytest.raises(InputError, match=r"llama\.rope\.scaling\.type"):
        gguf_folder.hf_config({**META, "llama.rope.scaling.type": "yarn"}, tied=True)
    with pytest.raises(InputError, match="pre-tokenizer 'llama-bpe' is not supported; supported: smollm"):
        gguf_folder.build_tokenizer({**META, "tokenizer.ggml.pre": "llama-bpe"})
    with pytest.raises(InputError, match="tokenizer model 'llama'"):
        gguf_folder.build_tokenizer({**META, "tokenizer.ggml.model": "llama"})
    with pytest.raises(InputError, match=r"tokenizer\.ggml\.scores"):
        gguf_folder.build_tokenizer({**META, "tokenizer.ggml.scores": [0.0] * len(TOKENS)})
    with pytest.raises(InputError, match=r"blk\.0\.attn_qkv\.weight"):
        gguf_folder._hf_name("blk.0.attn_qkv.weight", 2)
    with pytest.raises(InputError, match=r"blk\.2\.attn_q\.weight"):
        gguf_folder._hf_name("blk.2.attn_q.weight", 2)  # past the last block


def test_tokenizer_from_metadata():
    tok = gguf_folder.build_tokenizer(META)
    ids = lambda s: tok.encode(s).ids  # noqa: E731
    # digits alone (even after whitespace, which stays one piece), BPE merges, specials whole
    assert tok.encode("  123 hi!").tokens == ["ĠĠ", "1", "2", "3", "Ġhi", "!"]
    assert ids("<|im_start|>hi<|im_end|>") == [1, TOKENS.index("hi"), 2]
    assert ids("<tool>") == [3]  # user-defined: whole, not special
    assert tok.decode(ids("<tool>  123 hi!"), skip_special_tokens=True) == "<tool>  123 hi!"
    assert ids("hi")[0] != 1  # no bos unless the file asks
    with_bos = gguf_folder.build_tokenizer({**META, "tokenizer.ggml.add_bos_token": True})
    assert with_bos.encode("hi").ids == [1, TOKENS.index("hi")]
    cfg = gguf_folder.tokenizer_config(META)
    assert (cfg["bos_token"], cfg["eos_token"], cfg["unk_token"], cfg["pad_token"]) == (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>")
    assert cfg["chat_template"] == "{{ messages }}" and cfg["model_max_length"] == 64
