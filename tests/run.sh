#!/usr/bin/env bash
# The test command: installs the system tools the end-to-end tests drive (when missing),
# then runs every test of the workspace in release mode (the fuzz crate's own tests
# among them), and closes with the whole run's count. README.md and .ci/run both call
# this.
#
#   bash tests/run.sh                       # everything
#   bash tests/run.sh -p sluice-tests --test pools   # arguments go to `cargo test`
#
# Tools and the tests that need them:
#   openssl          a real TLS client (tests/tests/tls_termination.rs)
#   curl             a real HTTPS client of the admin API and of the quick start
#   systemd-analyze  checks the units `sluice service install` writes (service.rs)
#   ip               network namespaces and veth pairs (partition.rs)
#   python3          the quick start's stand-in web server (quickstart.rs)
#   etcd             the fleet's shared state (fleet.rs), from Debian's etcd-server
#   tinyproxy        an HTTP CONNECT egress proxy for agents (egress_proxy.rs)
#   microsocks       a SOCKS5 egress proxy for agents (egress_proxy.rs)
#   promtool         checks and unit-tests deploy/'s alert rules (monitoring.rs), from Debian's prometheus
#   chromium         a real browser for the operator console (console.rs), driven by
#   chromedriver     chromedriver over WebDriver (Debian's chromium-driver)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need openssl openssl
need curl curl
need systemd-analyze systemd
need ip iproute2
need python3 python3
need etcd etcd-server
need tinyproxy tinyproxy
need microsocks microsocks
need promtool prometheus
need chromium chromium
need chromedriver chromium-driver
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "tests/run.sh: not root and no sudo; install: ${missing[*]}" >&2
        exit 1
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends ca-certificates "${missing[@]}"
fi

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
if [ "$#" -gt 0 ]; then
    cargo test --release "$@" 2>&1 | tee "$log" || status=$?
else
    # Includes the fuzz crate's own tests (the seed corpus matches the encoder), which
    # sluice-proxy compiles in (proxy/tests/fuzz_seeds.rs).
    cargo test --workspace --release --no-fail-fast 2>&1 | tee "$log" || status=$?
fi
# cargo's last block is a crate's (empty) doc-tests; close with the whole run's count.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
