"""Every ```python block of README.md runs as written.

Each block is executed (`exec`, a fresh namespace) in its own temporary working directory, after
the preamble that `PREAMBLES` names for it: the files a reader of the README already has, made
tiny so the whole file runs in well under a minute on a CPU. A block no preamble matches runs
with none. The preambles:

  - "runs/demo/finetune/model" (the notebook block, which reads the demo's fine-tuned model):
    a random 2-layer BERT (d_model 16) with MiniLM's tokenizer and the demo's class names,
    written where `apex-jax demo` writes the model;
  - "models/my-causal-lm" (the verbalizer block): a random 2-layer GPT-2 causal LM with a
    word-level tokenizer in which " negative" and " positive" are single tokens.

The first block loads the real MiniLM from the asset cache (`apex_jax.load("minilm")`) as a
reader would; it needs no preamble.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apex_jax.models.loading import resolve
from tests.helpers.hf_decoder_reference import make_model
from tests.helpers.tiny_text import tiny_bert_folder

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S)


def demo_model(cwd: Path) -> None:
    """A tiny stand-in for the demo's fine-tuned MiniLM at runs/demo/finetune/model."""
    folder = cwd / "runs/demo/finetune/model"
    folder.mkdir(parents=True)
    tiny_bert_folder(folder, resolve("minilm"), seed=0)
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    (folder / "config.json").write_text(json.dumps(config))


def causal_lm(cwd: Path) -> None:
    """A tiny random GPT-2 causal LM at models/my-causal-lm, its label words single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = cwd / "models/my-causal-lm"
    folder.mkdir(parents=True)
    make_model("gpt2", "lm", folder, seed=0)
    words = "review : is this positive or negative ? answer a wonderful film . dull , and far too long".split()
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            unk_token="<unk>").save_pretrained(str(folder))


# A fragment that marks the block -> the preamble that prepares its working directory.
PREAMBLES = {
    "runs/demo/finetune/model": demo_model,
    "models/my-causal-lm": causal_lm,
}
BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_the_blocks():
    """The README's Python blocks are found, the verbalizer one among them, each preamble used once."""
    assert len(BLOCKS) >= 3
    assert any("verbalizer(" in b for b in BLOCKS)
    for fragment in PREAMBLES:
        assert sum(fragment in b for b in BLOCKS) == 1, fragment


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    for fragment, prepare in PREAMBLES.items():
        if fragment in block:
            prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"readme_block{index}"}
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    if "verbalizer(" in block:  # the block's claims: [2, 2] class logits, silencing changes them
        clf, batch = namespace["clf"], namespace["batch"]
        assert clf.apply(clf.params, batch).logits.shape == (2, 2)
        assert namespace["pos"].shape == (2, 1)
    if "apex_run(" in block:  # the run folder the block says it writes
        for name in ("samples.csv", "sigmas.csv", "summary.json", "index.html", "share_kept.png"):
            assert (tmp_path / "runs/notebook" / name).is_file(), name
