#!/usr/bin/env bash
# Build the limiterd image from the repository root: bash deploy/build-image.sh [TAG] (default limiterd:dev).
# Static binaries (CGO_ENABLED=0) go to deploy/.build/, which is the whole docker build context.
set -euo pipefail; cd "$(dirname "$0")/.."; tag=${1:-limiterd:dev}; mkdir -p deploy/.build/data && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o deploy/.build/ ./cmd/limiterd ./cmd/limitctl && docker build -f deploy/Dockerfile --build-arg VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)" --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" -t "$tag" deploy/.build
