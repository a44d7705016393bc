"""Prefix identity: chained block hashes shared by the router and the workers."""
