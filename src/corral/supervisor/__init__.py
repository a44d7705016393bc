"""Runs a whole stack on one machine as child processes (`corral up`)."""
