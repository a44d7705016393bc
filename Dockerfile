# The corral image: the router (and corral's CPU worker) for `corral deploy render`,
# whose manifests run `corral router --stack /etc/corral/stack.yaml` in it.
#
#   docker build -t corral:0.1.0 .
#
# llama.cpp is compiled for a portable x86-64 baseline (GGML_NATIVE=OFF): an image built
# with -march=native faults on nodes whose CPU lacks the builder's instructions.
# The router uses llama-cpp-python only to read GGUF vocabularies (kv routing, prompt length).

FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/corral --create-home corral
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels corral && rm -rf /wheels
USER 10001
WORKDIR /var/lib/corral
EXPOSE 8000
ENTRYPOINT []
CMD ["corral", "router", "--host", "0.0.0.0", "--port", "8000"]
