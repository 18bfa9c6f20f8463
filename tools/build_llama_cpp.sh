#!/usr/bin/env bash
# Builds llama.cpp, the peer of `chatforge bench decode` and of the GGUF export tests, from the
# source that the PyPI sdist of llama-cpp-python vendors (llama.cpp itself is not packaged for
# Debian, and PyPI is reachable where GitHub may not be). Nothing lands in the repository:
#
#   1. pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION
#   2. unpack it; its vendor/llama.cpp is a full llama.cpp tree
#   3. cmake with the web UI, OpenSSL and curl off and native CPU flags on, then build only the
#      tools chatforge uses: llama-simple / llama-completion, llama-tokenize, llama-bench,
#      llama-batched-bench, llama-server (and llama-cli where the tree has it)
#   4. copy the binaries to $LLAMA_CPP_DIR/bin and write $LLAMA_CPP_DIR/VERSION
#
# LLAMA_CPP_DIR defaults to $HOME/.cache/chatforge/llama.cpp (the tests and `bench decode` look
# there, or wherever LLAMA_CPP_DIR points). About 5 minutes on 2 cores; it runs at low priority
# (nice) and with JOBS parallel jobs (default: the number of cores). Re-running with the binaries
# present does nothing; FORCE=1 rebuilds.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DEST="${LLAMA_CPP_DIR:-$HOME/.cache/chatforge/llama.cpp}"
JOBS="${JOBS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"
TOOLS=(llama-simple llama-completion llama-cli llama-tokenize llama-bench llama-batched-bench llama-server)

if [ -z "${FORCE:-}" ] && [ -x "$DEST/bin/llama-tokenize" ] && [ -x "$DEST/bin/llama-server" ]; then
  echo "llama.cpp already built in $DEST ($(cat "$DEST/VERSION" 2>/dev/null))"
  exit 0
fi
command -v cmake >/dev/null || { echo "cmake is required (apt-get install cmake)"; exit 1; }
command -v c++ >/dev/null || { echo "a C++ compiler is required (apt-get install g++)"; exit 1; }

SRC="$DEST/src"
rm -rf "$SRC" && mkdir -p "$SRC" "$DEST/bin"
echo "downloading llama-cpp-python $VERSION (sdist) from PyPI"
# --no-binary for this one package only: its build backend (scikit-build-core) comes as a wheel,
# where `--no-binary :all:` would build setuptools and friends from source just to read metadata.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$VERSION" -d "$SRC"
tar -xzf "$SRC"/llama_cpp_python-*.tar.gz -C "$SRC"
TREE="$(echo "$SRC"/llama_cpp_python-*/vendor/llama.cpp)"
[ -f "$TREE/CMakeLists.txt" ] || { echo "no vendor/llama.cpp in the sdist"; exit 1; }

echo "configuring $TREE"
nice -n 15 cmake -S "$TREE" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >"$SRC/cmake.log" 2>&1 \
  || { tail -40 "$SRC/cmake.log"; exit 1; }

# Only the targets this tree defines (llama-cli and llama-completion come and go between versions).
TARGETS=()
HELP="$(cmake --build "$SRC/build" --target help)"
for t in "${TOOLS[@]}"; do
  if grep -qE "(^|[ .])$t(:|$| )" <<<"$HELP"; then TARGETS+=("$t"); fi
done
echo "building ${TARGETS[*]} with $JOBS jobs (nice 15)"
nice -n 15 cmake --build "$SRC/build" --config Release -j "$JOBS" --target "${TARGETS[@]}" >"$SRC/build.log" 2>&1 \
  || { tail -40 "$SRC/build.log"; exit 1; }
for t in "${TARGETS[@]}"; do
  cp "$SRC/build/bin/$t" "$DEST/bin/"
done
COMMIT="$(grep -oE 'LLAMA_BUILD_COMMIT[^)]*' "$SRC/build/common/build-info.cpp" 2>/dev/null | head -1 || true)"
echo "llama-cpp-python $VERSION sdist ${COMMIT:-}" >"$DEST/VERSION"
rm -rf "$SRC/build" "$SRC"/llama_cpp_python-*.tar.gz
echo "llama.cpp built: $DEST/bin ($(ls "$DEST/bin" | tr '\n' ' '))"
