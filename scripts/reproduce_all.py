"""`apex-jax reproduce all`: every claim script, then reports/README.md (--quick for the smoke-test sizes)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("all", sys.argv[1:])
