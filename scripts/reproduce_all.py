"""`apex-jax reproduce all`: every claim script, then reports/README.md (--quick for the smoke-test sizes)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("all", sys.argv[1:])
