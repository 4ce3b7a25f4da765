"""`apex-jax reproduce synapse`: see scripts/reproduce/synapse.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("synapse", sys.argv[1:])
