# scripts/deps.sh - the Debian 12 packages Quark needs, installed on demand.
# Sourced by demo.sh and test.sh; installs only what is missing, so a machine
# that has everything never touches the network.

QUARK_BUILD_PKGS="build-essential cmake pkg-config libuv1-dev libprotobuf-c-dev
  protobuf-c-compiler protobuf-compiler libprotobuf-dev libprotoc-dev libnghttp2-dev
  libsqlite3-dev libhiredis-dev libssl-dev libmicrohttpd-dev libcjson-dev libmosquitto-dev"
# clang: CI builds and runs one configuration with it, and the generated code
# is compiled with both compilers (tests/generator/warnings.cmake).
QUARK_TEST_PKGS="libcmocka-dev clang sqlite3 redis-server redis-tools mosquitto"

quark_install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
