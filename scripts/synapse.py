"""`apex-jax reproduce synapse`: see apex_jax/reproduce/synapse.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("synapse", sys.argv[1:])
