"""Probing methods built on the sweep engine (APEX; SYNAPSE to come)."""
