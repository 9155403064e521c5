#!/usr/bin/env bash
# Install what the tests need and run the whole suite through ctest: a normal
# build, a Release build with clang, an ASan+UBSan build, and a TSan build of
# the concurrency tests. Warnings are errors here (QUARK_WERROR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# shellcheck disable=SC2086
quark_install_packages $QUARK_BUILD_PKGS $QUARK_TEST_PKGS
# The gRPC interop test (tests/interop) runs a stock grpc-js client under node.
command -v node >/dev/null || quark_install_packages nodejs npm
echo "== interop: npm ci (tests/interop)"
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
jobs=$(nproc)
status=0

run_suite() { # name, build dir, cmake args..., -- ctest args...
  local name=$1 dir=$2; shift 2
  local cargs=() targs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cargs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targs=("$@")
  echo "== $name: configure and build ($dir)"
  cmake -S . -B "$dir" -DQUARK_BUILD_BENCH=OFF -DQUARK_WERROR=ON "${cargs[@]}" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  echo "== $name: ctest"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "${targs[@]}") || status=1
}

run_suite "release" build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
CC=clang run_suite "clang release" build-clang -DCMAKE_BUILD_TYPE=Release
run_suite "asan+ubsan" build-asan -DCMAKE_BUILD_TYPE=Debug "-DQUARK_SANITIZE=address,undefined" \
  -- --timeout 600
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
  run_suite "tsan" build-tsan -DCMAKE_BUILD_TYPE=Debug -DQUARK_SANITIZE=thread -- -L concurrency --timeout 900
exit $status
