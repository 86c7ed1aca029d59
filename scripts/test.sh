#!/usr/bin/env bash
# Sets up what the tests need (OpenBao from PyPI into .cache/) and runs every check CI runs:
# formatting, clippy with warnings denied, no import cycle between the top-level modules of src/
# (scripts/check-module-cycles.sh), and the whole test suite (unit, property, contract and
# integration tests against a real OpenBao and the in-repo BigCommerce emulator, crash matrix
# included); with CI=true, the Debian package built, installed and checked
# (scripts/test-package.sh).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
command -v flock >/dev/null || { echo "flock is required (apt-get install util-linux)" >&2; exit 1; }
SECRET_ROTATOR_BAO_BIN="$(scripts/install-openbao.sh)"
export SECRET_ROTATOR_BAO_BIN
echo "OpenBao: $("$SECRET_ROTATOR_BAO_BIN" version)"
# CI only: the two release builds (the simulation's and the package's) and cargo-deb's own install
# run in the background at the lowest priority while the debug suite builds and runs, in a target
# directory of their own so that neither waits on the other's lock. The suite's tests spend most of
# their time waiting on servers and timers; the release builds use that time.
release_target="${CARGO_TARGET_DIR:-target}"
release_pid=
if [ "${CI:-}" = true ]; then
  release_target=target/ci-release
  release_log="$(mktemp)"
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    export CARGO_TARGET_DIR="$release_target"
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
    cargo test --release --all-features --locked --test simulation --no-run --quiet
    scripts/build-deb.sh >/dev/null
  ) >"$release_log" 2>&1 &
  release_pid=$!
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log" "${release_log:-}"; [ -z "$release_pid" ] || kill "$release_pid" 2>/dev/null || true' EXIT
scripts/check-module-cycles.sh
cargo test --workspace --all-features -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"
# The simulation of the engine, in release: 20,000 seeded schedules (about 80 s of CPU, 40 s on
# two idle cores); it prints their count and wall time, and the replay command of any failing
# seed.
if [ -n "$release_pid" ] && ! wait "$release_pid"; then
  cat "$release_log" >&2
  echo "the background release builds failed (above)" >&2
  exit 1
fi
release_pid=
SIM_SCHEDULES=20000 CARGO_TARGET_DIR="$release_target" cargo test --release --all-features --test simulation -- schedules --nocapture 2>&1 | tee -a "$log"
# CI (CI=true, root, a machine of its own): build the Debian package, install it and check it
# (scripts/test-package.sh). Not on a developer's machine: it installs a package system-wide.
if [ "${CI:-}" = true ]; then
  CARGO_TARGET_DIR="$release_target" scripts/test-package.sh 2>&1 | tee -a "$log"
fi
# One closing line for the whole suite (cargo prints one per test binary, doc tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
