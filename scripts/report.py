"""`apex-jax reproduce report`: see scripts/reproduce/report.py (--help for the options)."""

import sys

from reproduce import run  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    run("report", sys.argv[1:])
