"""`apex-jax reproduce regularity_text`: see apex_jax/reproduce/regularity_text.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("regularity_text", sys.argv[1:])
