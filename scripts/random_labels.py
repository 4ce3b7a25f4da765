"""`apex-jax reproduce random-labels`: see scripts/reproduce/random_labels.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("random_labels", sys.argv[1:])
