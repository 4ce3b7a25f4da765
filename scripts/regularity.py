"""`apex-jax reproduce regularity`: see apex_jax/reproduce/regularity.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("regularity", sys.argv[1:])
