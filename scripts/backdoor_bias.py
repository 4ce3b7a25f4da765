"""`apex-jax reproduce backdoor-bias`: see scripts/reproduce/backdoor_bias.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("backdoor_bias", sys.argv[1:])
