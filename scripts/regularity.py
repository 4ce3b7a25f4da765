"""`apex-jax reproduce regularity`: see scripts/reproduce/regularity.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("regularity", sys.argv[1:])
