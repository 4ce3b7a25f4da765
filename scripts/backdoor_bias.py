"""`apex-jax reproduce backdoor-bias`: see apex_jax/reproduce/backdoor_bias.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("backdoor_bias", sys.argv[1:])
