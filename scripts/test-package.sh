#!/usr/bin/env bash
# Builds the Debian package and checks it on this machine with the real tools: `dpkg -c` lists
# every file, `dpkg -i` installs it, the binary names its version and commit, `man` finds its
# pages, the installed unit passes `systemd-analyze verify` and keeps `systemd-analyze security`
# at or below 1.5, `promtool` accepts the installed alert rules, `dpkg -r` keeps the conffile and
# `dpkg --purge` removes it and nothing it did not install. Installs a package system-wide: run
# it as root on a machine you can spare (scripts/test.sh runs it only when CI=true).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
started=$SECONDS
fail() { echo "test-package: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "installs a package: run it as root (CI does)"
need=()
command -v man >/dev/null || need+=(man-db)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo-deb >/dev/null; then
  t=$SECONDS
  cargo install cargo-deb --locked --quiet
  echo "test-package: cargo install cargo-deb --locked took $((SECONDS - t)) s"
fi

promtool check rules monitoring/secret-rotator.rules.yml >/dev/null || fail "promtool check rules"

t=$SECONDS
deb="$(scripts/build-deb.sh)"
echo "test-package: built $deb in $((SECONDS - t)) s"
[ -f "$deb" ] || fail "no package at $deb"

listing="$(dpkg -c "$deb")"
for f in \
  usr/bin/secret-rotator \
  lib/systemd/system/secret-rotator.service \
  etc/secret-rotator/config.toml \
  usr/share/doc/secret-rotator/vault-policy.hcl \
  usr/share/doc/secret-rotator/README.md \
  usr/share/man/man1/secret-rotator.1.gz \
  usr/share/man/man1/secret-rotator-supply.1.gz \
  usr/share/man/man1/secret-rotator-run.1.gz \
  usr/share/bash-completion/completions/secret-rotator \
  usr/share/zsh/vendor-completions/_secret-rotator \
  usr/share/fish/vendor_completions.d/secret-rotator.fish \
  usr/share/secret-rotator/secret-rotator.rules.yml \
  usr/share/secret-rotator/grafana-dashboard.json; do
  grep -q " \./$f\$" <<<"$listing" || fail "dpkg -c lacks /$f"
done
conffiles="$(dpkg-deb -f "$deb" Package >/dev/null && dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)"
[ "$conffiles" = "/etc/secret-rotator/config.toml" ] || fail "conffiles: $conffiles"

# A package left by an earlier run would hide what this one lacks.
dpkg --purge secret-rotator >/dev/null 2>&1 || true
[ ! -e /etc/secret-rotator ] || fail "/etc/secret-rotator exists and is not the package's: not touching it"
trap 'dpkg --purge secret-rotator >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null

version="$(/usr/bin/secret-rotator --version)"
grep -Eq '^secret-rotator [0-9]+\.[0-9]+\.[0-9]+ \((commit [0-9a-f]{7,}|unknown commit)\)$' <<<"$version" \
  || fail "--version: $version"
echo "test-package: $version"
man -w secret-rotator >/dev/null || fail "man -w secret-rotator"
man -w secret-rotator-supply >/dev/null || fail "man -w secret-rotator-supply"

unit=/lib/systemd/system/secret-rotator.service
grep -q '^ExecStart=/usr/bin/secret-rotator ' "$unit" || fail "the unit does not run /usr/bin/secret-rotator"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
exposure="$(systemd-analyze security --offline=yes --no-pager "$unit" \
  | sed -n 's/.*Overall exposure level for secret-rotator.service: \([0-9.]*\).*/\1/p')"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }' || fail "exposure ${exposure:-unknown} > 1.5"
echo "test-package: systemd-analyze security: $exposure"
promtool check rules /usr/share/secret-rotator/secret-rotator.rules.yml >/dev/null \
  || fail "promtool check rules on the installed file"
python3 -m json.tool /usr/share/secret-rotator/grafana-dashboard.json >/dev/null \
  || fail "the dashboard is not JSON"

# What the operator adds is theirs: purge leaves it.
mkdir -p /etc/secret-rotator/credentials
echo "operator's" >/etc/secret-rotator/credentials/secret-id
echo "# edited" >>/etc/secret-rotator/config.toml
dpkg -r secret-rotator >/dev/null
[ ! -e /usr/bin/secret-rotator ] || fail "dpkg -r left the binary"
grep -q '^# edited$' /etc/secret-rotator/config.toml || fail "dpkg -r did not keep the edited conffile"
dpkg --purge secret-rotator >/dev/null
[ ! -e /etc/secret-rotator/config.toml ] || fail "dpkg --purge left the conffile"
[ -f /etc/secret-rotator/credentials/secret-id ] || fail "dpkg --purge removed the operator's file"
rm /etc/secret-rotator/credentials/secret-id
rmdir /etc/secret-rotator/credentials /etc/secret-rotator
trap - EXIT
echo "test-package: ok in $((SECONDS - started)) s"
