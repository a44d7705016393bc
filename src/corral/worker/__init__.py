"""corral's own engine host: one model per process, OpenAI-compatible HTTP.

Modules:

- server.py: ``serve(stack, model_name, host=, port=)``: uvicorn, signals, drain
- app.py: ``create_app(model, engine)``: routes, lifespan, the one error handler
- completions.py: /v1/chat/completions and /v1/completions (JSON or SSE)
- engine.py: the Engine / TextEngine / EmbeddingEngine protocols
- llamacpp.py: LlamaCppEngine, llama.cpp on one thread, token by token
- prefix_cache.py: prefix reuse beyond the last prompt (store lookups, saves, reporting)
- prefix_store.py: PrefixStore, the byte-bounded LRU of prefix states by block hashes
- seq_state.py: the KV of a token prefix, copied out of llama.cpp and back
- kv_events.py: the blocks held, as KV event batches: ledger, bounded log, SSE feed
- embeddings.py: OnnxEmbeddingEngine, onnxruntime + tokenizers, micro-batched
- admission.py: the bounded FIFO in front of each engine (full -> 503)
- streams.py: TokenStream, text from the engine thread to the event loop
"""
