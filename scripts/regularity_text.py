"""`apex-jax reproduce regularity_text`: see scripts/reproduce/regularity_text.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("regularity_text", sys.argv[1:])
