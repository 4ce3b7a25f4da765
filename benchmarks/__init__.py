"""apex-jax benchmarks: speed and memory against PyTorch forward-hook baselines.

Run each entry point from the repository root as a module (results go to `--out`, default
bench-results/; every JSON names the git commit that produced it):

    python -m benchmarks.w1           W1: APEX noise sweep on the fine-tuned MiniLM vs torch hooks
    python -m benchmarks.w2           W2: SYNAPSE [CLS] silencing on the fine-tuned MiniLM vs torch hooks
    python -m benchmarks.escape       time to the escape-σ table: adaptive bisection vs a fine σ grid
    python -m benchmarks.real_size    W1/W2 at BERT-base and GPT-2-small size vs the torch best form
    python -m benchmarks.accelerator  W1/W2 at real size in bf16 on a GPU/TPU: forwards/s, MFU, memory
    python -m benchmarks.compile_depth  compile and steady-state time of one sweep kernel vs depth
    python -m benchmarks.bf16_effect  what bfloat16 changes: agreement, logits, APEX curves vs float32

`--help` on each gives its options; `--quick` / `--smoke` run tiny sizes. `harness` holds what
they share. Measured figures and the decisions they informed: benchmarks/RESULTS.md.
"""
