"""corral's own engine host: one model per process, OpenAI-compatible HTTP.

Modules:

- server.py: ``serve(stack, model_name, host=, port=)``: uvicorn, signals, drain
- app.py: ``create_app(model, engine)``: routes, lifespan, the one error handler
- completions.py: /v1/chat/completions and /v1/completions (JSON or SSE)
- engine.py: the Engine / TextEngine / EmbeddingEngine protocols
- llamacpp.py: LlamaCppEngine, llama.cpp on one thread, token by token
- embeddings.py: OnnxEmbeddingEngine, onnxruntime + tokenizers, micro-batched
- admission.py: the bounded FIFO in front of each engine (full -> 503)
- streams.py: TokenStream, text from the engine thread to the event loop
"""
