#!/usr/bin/env bash
# The demo: a dev OpenBao and the BigCommerce emulator on free loopback ports, then real rotations
# of a storefront token and an AppRole secret-id, with `status` and `history` before and after,
# and one assisted rotation of a legacy API account with the emulator's admin API as the person.
# Everything it starts is stopped on exit. Needs cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError: pass'; }
# Wait until something answers HTTP at $1 (any status).
wait_http() { for _ in $(seq 1 100); do python3 -c "
import sys, urllib.request, urllib.error
try: urllib.request.urlopen('$1', timeout=1)
except urllib.error.HTTPError: pass" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bao="$(scripts/install-openbao.sh)"
step "building"
cargo build --quiet --workspace --bins
bin=target/debug/secret-rotator

vault_port="$(free_port)"; emu_port="$(free_port)"; hook_port="$(free_port)"
export VAULT_ADDR="http://127.0.0.1:$vault_port" VAULT_TOKEN=demo-root BAO_ADDR="http://127.0.0.1:$vault_port" BAO_TOKEN=demo-root
"$bao" server -dev -dev-root-token-id=demo-root -dev-listen-address="127.0.0.1:$vault_port" >"$work/bao.log" 2>&1 &
pids+=($!)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin-token"
target/debug/bigcommerce-emulator --listen "127.0.0.1:$emu_port" --seed config/emulator-seed.toml \
  --admin-token-file "$work/admin-token" >"$work/emulator.log" 2>&1 &
pids+=($!)
wait_http "$VAULT_ADDR/v1/sys/health"
wait_http "http://127.0.0.1:$emu_port/stores/abc123/v2/time"
echo "OpenBao dev server at $VAULT_ADDR, BigCommerce emulator at http://127.0.0.1:$emu_port"

# The config: config/demo.toml with this run's ports and directory.
sed -e "s#127.0.0.1:8200#127.0.0.1:$vault_port#g; s#127.0.0.1:9400#127.0.0.1:$emu_port#g" \
    -e "s#127.0.0.1:9500#127.0.0.1:$hook_port#g; s#/tmp/secret-rotator-demo#$work#g" \
    config/demo.toml >"$work/config.toml"
# The webhook receiver, with a fresh signing key that the daemon reads from Vault.
hook_key="whsec_$(head -c 24 /dev/urandom | base64)"
python3 scripts/webhook-receiver.py "$hook_port" "$hook_key" >"$work/webhook.log" 2>&1 &
pids+=($!)
export SECRET_ROTATOR_CONFIG="$work/config.toml" SECRET_ROTATOR_EVENTS_FILE="$work/events.jsonl"

step "an operator stores the store-level API token in Vault and creates the AppRole role"
"$bao" kv put -mount=secret bigcommerce/abc123/store-api access_token=rotatoraccesstoken0000000000001 >/dev/null
"$bao" kv put -mount=secret webhooks/demo signing_key="$hook_key" >/dev/null
"$bao" auth enable approle >/dev/null
"$bao" write auth/approle/role/demo-app secret_id_ttl=3h token_ttl=1h >/dev/null
"$bin" check-config

step "status before: nothing written yet"
"$bin" status || true

step "rotate demo-storefront --wait (first credential: minted, verified, written as version 1)"
"$bin" rotate demo-storefront --wait
step "rotate demo-storefront --wait (a real rotation: version 2, the old token revoked and checked dead)"
"$bin" rotate demo-storefront --wait
step "rotate demo-app-secret-id --wait, twice"
"$bin" rotate demo-app-secret-id --wait
"$bin" rotate demo-app-secret-id --wait

step "status after"
"$bin" status
step "history demo-storefront"
"$bin" history demo-storefront
step "history demo-app-secret-id"
"$bin" history demo-app-secret-id
step "events (no secret in them)"
cat "$work/events.jsonl"
step "what the webhook receiver verified and printed"
cat "$work/webhook.log"
step "deliveries demo-storefront"
"$bin" deliveries demo-storefront
step "test-dependent demo-storefront demo-hook (a signed ping)"
"$bin" test-dependent demo-storefront demo-hook
sleep 0.2; tail -n 1 "$work/webhook.log"
step "the rendered env file (values masked here; the file holds the token)"
ls -l "$work/storefront.env" | awk '{print $1, $NF}'
sed -e 's/=.*/=(masked)/' "$work/storefront.env"
step "the emulator's storefront tokens: one live, one revoked"
python3 - "$emu_port" "$(cat "$work/admin-token")" <<'PY'
import json, sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://127.0.0.1:{port}/__admin/stores/abc123/storefront-tokens",
                             headers={"Authorization": f"Bearer {token}"})
for t in json.load(urllib.request.urlopen(req)):
    print(f"  jti={t['jti'][:12]}  state={t['state']:<8} sha256={t['sha256'][:16]}")
PY
# The control panel: the emulator's admin API (METHOD PATH), printing the JSON answer.
admin() { python3 - "$emu_port" "$(cat "$work/admin-token")" "$1" "$2" <<'PY'
import sys, urllib.request
port, token, method, path = sys.argv[1:5]
req = urllib.request.Request(f"http://127.0.0.1:{port}/__admin/stores/abc123/{path}", method=method,
                             headers={"Authorization": f"Bearer {token}"})
print(urllib.request.urlopen(req).read().decode())
PY
}
field() { python3 -c 'import json, sys; v = json.load(sys.stdin); v = v[0] if isinstance(v, list) else v; print(v[sys.argv[1]])' "$1"; }
api_path="http://127.0.0.1:$emu_port/store-abc123/api/v2/"

step "assisted: an operator adopts the legacy API account legacy-app (version 1)"
legacy_token="$(admin GET legacy-accounts | field token)"
"$bao" kv put -mount=secret bigcommerce/abc123/legacy-app username=legacy-app token="$legacy_token" api_path="$api_path" >/dev/null
step "rotate demo-legacy: due, rotation.due carries the control-panel steps"
"$bin" rotate demo-legacy
"$bin" status | grep -E 'NAME|demo-legacy'
step "the person: Advanced Settings > Legacy API Accounts > Edit > Generate New Token > Save (admin API)"
new_token="$(admin POST legacy-accounts/legacy-app/regenerate | field token)"
step "the person supplies a mistyped token: rejected, nothing written"
printf '{"username": "legacy-app", "token": "%s", "api_path": "%s"}' "${new_token%?}0" "$api_path" \
  | "$bin" supply demo-legacy || echo "(exit $?)"
step "the person supplies the new token: verified, committed, old one checked dead, rotated and revoked"
printf '{"username": "legacy-app", "token": "%s", "api_path": "%s"}' "$new_token" "$api_path" \
  | "$bin" supply demo-legacy
"$bin" history demo-legacy
grep demo-legacy "$work/events.jsonl" | python3 -c 'import json, sys
for l in sys.stdin: e = json.loads(l); print(" ", e["type"], "version", e["data"]["version"], e["timestamp"])'

step "plan (dry run)"
"$bin" plan

admin_port="$(free_port)"
step "the daemon on its own for 40 s: the same config with max_age 15s, /metrics on 127.0.0.1:$admin_port"
sed -e 's/^max_age = "1h"/max_age = "15s"/' "$work/config.toml" >"$work/daemon.toml"
printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin_port" >>"$work/daemon.toml"
SECRET_ROTATOR_CONFIG="$work/daemon.toml" SECRET_ROTATOR_LOG=info "$bin" run >"$work/daemon.log" 2>&1 &
daemon_pid=$!
pids+=("$daemon_pid")
wait_http "http://127.0.0.1:$admin_port/healthz"
before="$("$bao" kv metadata get -mount=secret -format=json bigcommerce/abc123/storefront | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["current_version"])')"
sleep 40
after="$("$bao" kv metadata get -mount=secret -format=json bigcommerce/abc123/storefront | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["current_version"])')"
echo "demo-storefront went from version $before to $after with nobody asking"
grep -E 'rotation started|committed|revoked' "$work/daemon.log" | tail -n 6 || true
step "status while the daemon runs"
SECRET_ROTATOR_CONFIG="$work/daemon.toml" "$bin" status
step "GET /metrics (an excerpt)"
python3 - "$admin_port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("secret_rotator_credentials ", "secret_rotator_rotations_total",
                        "secret_rotator_credential_age_seconds", "secret_rotator_vault_requests_total")):
        print("  " + line)
PY
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
echo
echo "Done. Run the daemon the same way with: secret-rotator --config FILE run"
