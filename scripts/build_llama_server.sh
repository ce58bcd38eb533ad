#!/usr/bin/env bash
# Build llama.cpp's own HTTP server (llama-server, C++) once into a cache, from the llama.cpp
# that llama-cpp-python's sdist vendors (the same version as the node's Python server).
#
# Usage: scripts/build_llama_server.sh [PYTHON]
#   PYTHON              interpreter whose pip downloads the sdist (default: .venv/bin/python)
#   PERLLM_BIN_CACHE    where the binary goes (default: $HOME/.cache/perllm/bin)
#
# llama-server exports Prometheus metrics with --metrics (llamacpp:requests_processing,
# llamacpp:requests_deferred, ...): the gateway-scraping tests load one with a client the
# gateway does not see. Built for x86-64-v3 like the wheel (see build_llama_wheel.sh), without
# CURL, tests or examples; a few minutes on 2 cores, once.
set -euo pipefail

PY="${1:-.venv/bin/python}"
VERSION="0.3.36"
CACHE="${PERLLM_BIN_CACHE:-$HOME/.cache/perllm/bin}"
BIN="$CACHE/llama-server-$VERSION"
if [[ -x "$BIN" ]]; then
    echo "build_llama_server: using cached $BIN" >&2
    exit 0
fi
mkdir -p "$CACHE"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
echo "build_llama_server: building llama-server $VERSION into $CACHE (takes minutes)" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
cp "$work/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" --version 2>&1 | head -n 2
