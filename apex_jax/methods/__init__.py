"""Probing methods built on the sweep engine: APEX (apex.py) and SYNAPSE (probes, rankings,
silencing, attacks, synapse)."""
