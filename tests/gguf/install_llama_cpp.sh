#!/usr/bin/env bash
# tests/gguf/install_llama_cpp.sh PYTHON: makes llama.cpp's Python binding
# (PyPI llama-cpp-python, which builds the llama.cpp it vendors from source)
# importable by PYTHON, the .venv made by tools/setup, which calls this; the
# oracle of the slow GGUF tests (ctest -C full -L slow, tests/gguf).
# The one place the version and the build options live.
#
# Idempotent and cached: nothing to do when the pinned version imports; a new
# .venv on a machine that built it once takes pip's cached wheel (seconds,
# ~/.cache/pip/wheels: pip caches the wheel it builds from an sdist, keyed by
# the sdist, not by CMAKE_ARGS). Only a machine with no cache builds (CPU
# only, on 2 cores: see docs/testing.md, "llama.cpp", for the time).
#
# The build is cut to what the binding loads: the targets llama (and the
# ggml, ggml-base and ggml-cpu it links), not llama.cpp's common library,
# which the binding does not load but its CMakeLists forces on; no mtmd
# (LLAVA_BUILD: the multimodal library, loaded only for llava chat formats);
# no curl. Tests, examples, tools and server are off already (llama.cpp is a
# subproject there). GGML_NATIVE: one CPU variant, for this machine: the
# cached wheel is this machine's.
set -euo pipefail
py=${1:?usage: install_llama_cpp.sh PYTHON}
version=0.3.16
if [[ "$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null)" == "$version" ]]; then
  echo "llama-cpp-python $version present"
  exit 0
fi
echo "installing llama-cpp-python $version (a cached wheel, or llama.cpp built from source: minutes)"
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$py" -m pip install -q --config-settings=build.targets=llama "llama-cpp-python==$version"
"$py" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__, "installed")'
