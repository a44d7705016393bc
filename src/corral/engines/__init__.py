"""How to launch and probe each engine kind that corral does not host itself.

vllm   `vllm serve` command line, environment and LMCache config from a stack entry
"""
