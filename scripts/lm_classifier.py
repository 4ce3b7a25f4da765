"""Fine-tune and cache SmolLM2 as a BANKING77 classifier (claim 5's decoder task): see
scripts/reproduce/lm_classifier.py (--help for the options)."""

import sys

from reproduce import lm_classifier  # scripts/reproduce/: this folder is on sys.path when run as a script

if __name__ == "__main__":
    lm_classifier.main(sys.argv[1:])
