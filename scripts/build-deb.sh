#!/usr/bin/env bash
# Builds the Debian package (target/debian/secret-rotator_VERSION-1_ARCH.deb, under
# $CARGO_TARGET_DIR when it is set) and prints its path. First it generates what the package
# holds besides the binary: the man pages and shell completions from the clap definitions
# (examples/gen-docs.rs) and the packaged unit, which runs /usr/bin/secret-rotator. The contents
# are listed in Cargo.toml, [package.metadata.deb]. Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb is required: cargo install cargo-deb --locked" >&2; exit 1; }
out=packaging/build
rm -rf "$out"
mkdir -p "$out"
cargo run --quiet --locked --example gen-docs -- "$out" >/dev/null
gzip -9n "$out"/man/*.1
sed -E 's|^(Exec[A-Za-z]*=)/usr/local/bin/secret-rotator|\1/usr/bin/secret-rotator|' \
  systemd/secret-rotator.service >"$out/secret-rotator.service"
if grep -E '^Exec[A-Za-z]*=/usr/local/bin' "$out/secret-rotator.service"; then
  echo "the packaged unit still runs /usr/local/bin" >&2
  exit 1
fi
cargo deb --locked "$@" | tail -n 1
