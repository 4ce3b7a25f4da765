"""`apex-jax reproduce report`: see apex_jax/reproduce/report.py (--help for the options)."""

import sys

from apex_jax.reproduce import run

if __name__ == "__main__":
    run("report", sys.argv[1:])
