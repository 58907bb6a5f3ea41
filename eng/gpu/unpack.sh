#!/usr/bin/env bash
# On the GPU machine, from the repository root: unpack the published app to /tmp/q/qtip.
set -euo pipefail
mkdir -p /tmp/q && tar -C /tmp/q -xJf .gpu/qtip.tar.xz
echo "unpacked to /tmp/q/qtip"
