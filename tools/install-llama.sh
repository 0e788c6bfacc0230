#!/usr/bin/env bash
# Installs the local-LLM runtime (node-llama-cpp and llama.cpp's prebuilt CPU binary for this platform) into
# .llama-runtime/, outside the default install: `npm run install:llama`. `--gpu` also installs its GPU builds
# (CUDA, Vulkan, Metal: several hundred MB). Everything comes from the npm registry; nothing is compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.21.1
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) binary=linux-x64 ;;
  Linux-aarch64 | Linux-arm64) binary=linux-arm64 ;;
  Linux-armv7l) binary=linux-armv7l ;;
  Darwin-arm64) binary=mac-arm64-metal ;;
  Darwin-x86_64) binary=mac-x64 ;;
  *) binary="" ;;
esac
if [ "${1:-}" = "--gpu" ] || [ -z "$binary" ]; then
  # Every prebuilt binary node-llama-cpp lists for this platform (its optional dependencies).
  npm install --prefix .llama-runtime --no-save --no-package-lock --no-audit --no-fund "node-llama-cpp@$VERSION"
else
  npm install --prefix .llama-runtime --no-save --no-package-lock --no-audit --no-fund --omit=optional \
    "node-llama-cpp@$VERSION" "@node-llama-cpp/$binary@$VERSION"
fi
echo "node-llama-cpp $VERSION installed in .llama-runtime/ ($(du -sh .llama-runtime | cut -f1))"
