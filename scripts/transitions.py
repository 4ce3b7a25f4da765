"""`apex-jax reproduce transitions`: see scripts/reproduce/transitions.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("transitions", sys.argv[1:])
