#!/usr/bin/env bash
# One storefront-token rotation by hand, as an operator's cron job would script it with the bao
# CLI, curl and jq: the baseline of `cargo bench --bench oneshot`. The same steps as
# `secret-rotator rotate NAME --wait`, without its state record: read the secret's metadata, the
# current token and the store's access token; mint; verify the new token; write it with
# check-and-set on the version read; revoke the old one; poll until the store rejects it.
#
# Environment: BAO (the bao binary), BAO_ADDR, BAO_TOKEN, API (the store API's base URL), STORE
# (store hash), SECRET (KV v2 path under `secret/`), ACCESS (path of the store access token).
set -euo pipefail

version=$("$BAO" kv metadata get -format=json "secret/$SECRET" | jq -r .data.current_version)
old=$("$BAO" kv get -format=json "secret/$SECRET" | jq -r .data.data.token)
access=$("$BAO" kv get -format=json "secret/$ACCESS" | jq -r .data.data.access_token)

expires=$(($(date +%s) + 30 * 86400))
new=$(curl -sf -X POST "$API/stores/$STORE/v3/storefront/api-token" \
  -H "X-Auth-Token: $access" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -d "{\"channel_id\":1,\"expires_at\":$expires}" | jq -r .data.token)
[ -n "$new" ] && [ "$new" != null ]

probe='{"query":"{ site { settings { storeName } } }"}'
graphql() {
  curl -s -o /dev/null -w '%{http_code}' -X POST "$API/store-$STORE/graphql" \
    -H "Authorization: Bearer $1" -H 'Content-Type: application/json' -d "$probe"
}
[ "$(graphql "$new")" = 200 ]

"$BAO" kv put -cas="$version" "secret/$SECRET" token="$new" >/dev/null

curl -sf -o /dev/null -X DELETE "$API/stores/$STORE/v3/storefront/api-token" \
  -H "X-Auth-Token: $access" -H "Sf-Api-Token: $old" -H 'Accept: application/json'

for _ in $(seq 1 100); do
  [ "$(graphql "$old")" = 401 ] && exit 0
  sleep 0.05
done
echo "the old token is still accepted" >&2
exit 1
