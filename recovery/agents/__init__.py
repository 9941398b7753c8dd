"""Agents that propose lever plans for one batch."""
