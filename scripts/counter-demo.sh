#!/usr/bin/env bash
# Install what Quark needs, build it, and run the counter demo (an embedded
# silo, a client, virtual actors called blocking and asynchronously).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# shellcheck disable=SC2086
quark_install_packages $QUARK_BUILD_PKGS
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQUARK_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
./build/examples/counter/counter-demo
