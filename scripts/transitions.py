"""`apex-jax reproduce transitions`: see apex_jax/reproduce/transitions.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("transitions", sys.argv[1:])
