"""Faults on purpose: dependencies that refuse, hang, trickle or lie; crashes between steps; a full disk."""
