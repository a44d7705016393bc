"""The OpenAI wire protocol, as far as corral needs it: routing fields, SSE framing."""
