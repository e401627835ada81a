#!/usr/bin/env bash
# tests/gguf/install_llama_cpp.sh PYTHON: makes llama.cpp's Python binding
# (PyPI llama-cpp-python, which builds the llama.cpp it vendors from source:
# CPU only, ~10-20 minutes on 2 cores) importable by PYTHON (the .venv made
# by tools/setup). Idempotent: does nothing when the pinned version imports.
# Run it once before the slow GGUF tests (ctest -C full -L slow).
set -euo pipefail
py=${1:?usage: install_llama_cpp.sh PYTHON}
version=0.3.16
if [[ "$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null)" == "$version" ]]; then
  echo "llama-cpp-python $version present"
  exit 0
fi
echo "building llama-cpp-python $version (llama.cpp from source, CPU only)"
CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$py" -m pip install -q "llama-cpp-python==$version"
"$py" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__, "installed")'
