"""`apex-jax reproduce random-labels`: see apex_jax/reproduce/random_labels.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("random_labels", sys.argv[1:])
