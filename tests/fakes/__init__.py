"""Fakes for tests: a real OpenAI-compatible engine server with scripted behaviour."""
