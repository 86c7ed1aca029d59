# secret-rotator: a least-privilege Vault/OpenBao policy for the credentials of config/example.toml.
#
# Adapt it to your configuration: one group of blocks per credential (its KV v2 mount and path),
# one read block per secret a credential only reads (access tokens, webhook signing keys), one
# group per AppRole role, and the state mount and prefix ([vault] state_mount, state_prefix).
# Every path is exact, except the state prefix, which the daemon owns entirely.
#
# The state prefix holds each attempt's pending and previous credentials: its ACL must be as strict
# as the credentials' own. Grant it to the daemon only.
#
#   bao policy write secret-rotator config/vault-policy.hcl
#   bao token create -policy=secret-rotator        (or attach it to the daemon's AppRole role)

# --- The daemon's own state ------------------------------------------------------------------
# One KV v2 record per credential (read and written with check-and-set), and one entry per
# finished attempt under `history/`, written once.
path "secret/data/secret-rotator/*" {
  capabilities = ["read", "create", "update"]
}

# Listing and pruning the history entries, and max_versions on the records.
path "secret/metadata/secret-rotator/*" {
  capabilities = ["read", "update", "list", "delete"]
}

# --- The credentials' folders ------------------------------------------------------------------
# The reconcile (every `reconcile_interval`) reads the metadata of the credentials that share a
# folder with one OpenBao `detailed-metadata` LIST per folder instead of one read each. It shows
# the metadata (versions, times, custom_metadata: no data) of every key in the folder. Without
# it, the daemon says so once in its log and reads each credential's metadata by itself (as it
# always does on HashiCorp Vault, which has no such listing).
path "secret/detailed-metadata/bigcommerce/" {
  capabilities = ["list"]
}

path "secret/detailed-metadata/bigcommerce/abc123/" {
  capabilities = ["list"]
}

# --- storefront-main: BigCommerce storefront token ---------------------------------------------
# The live secret: read it, write each new version with check-and-set.
path "secret/data/bigcommerce/storefront-main" {
  capabilities = ["read", "create", "update"]
}

# Its versions and their ages (status, plan, due times).
path "secret/metadata/bigcommerce/storefront-main" {
  capabilities = ["read"]
}

# Only with `destroy_old_version = true`: destroy the old version once it is revoked.
path "secret/destroy/bigcommerce/storefront-main" {
  capabilities = ["update"]
}

# The webhook dependent's signing key: read only.
path "secret/data/webhooks/shop-frontend" {
  capabilities = ["read"]
}

# --- storefront-private: BigCommerce private storefront token -----------------------------------
path "secret/data/bigcommerce/storefront-private" {
  capabilities = ["read", "create", "update"]
}

path "secret/metadata/bigcommerce/storefront-private" {
  capabilities = ["read"]
}

# --- billing-secret-id: AppRole secret-id of the role `billing` ---------------------------------
path "secret/data/approle/billing/secret-id" {
  capabilities = ["read", "create", "update"]
}

path "secret/metadata/approle/billing/secret-id" {
  capabilities = ["read"]
}

# Generate a new secret-id; list the role's accessors to find (and destroy) one whose generate
# answer was lost (without `list` it is reported as a possible orphan that expires on its own).
path "auth/approle/role/billing/secret-id" {
  capabilities = ["update", "list"]
}

# The role's own secret_id_ttl: when neither the role nor the config sets one, the daemon asks
# for the credential's lifetime, so a secret-id nobody holds still expires.
path "auth/approle/role/billing/secret-id-ttl" {
  capabilities = ["read"]
}

# Look up and destroy a secret-id by its accessor.
path "auth/approle/role/billing/secret-id-accessor/lookup" {
  capabilities = ["update"]
}

path "auth/approle/role/billing/secret-id-accessor/destroy" {
  capabilities = ["update"]
}

# Look up and destroy a secret-id by its value (one adopted by hand, whose accessor is unknown).
path "auth/approle/role/billing/secret-id/lookup" {
  capabilities = ["update"]
}

path "auth/approle/role/billing/secret-id/destroy" {
  capabilities = ["update"]
}

# The role id, stored beside the secret-id (an identifier, not a secret).
path "auth/approle/role/billing/role-id" {
  capabilities = ["read"]
}

# --- legacy-export, ops-user-token: assisted rotations (the new token is supplied by a person) --
path "secret/data/bigcommerce/abc123/legacy-export" {
  capabilities = ["read", "create", "update"]
}

path "secret/metadata/bigcommerce/abc123/legacy-export" {
  capabilities = ["read"]
}

path "secret/data/bigcommerce/abc123/ops-user" {
  capabilities = ["read", "create", "update"]
}

path "secret/metadata/bigcommerce/abc123/ops-user" {
  capabilities = ["read"]
}

# --- store-api: the store-level API account ----------------------------------------------------
# Rotated itself, and read as the access token that mints the storefront tokens above.
path "secret/data/bigcommerce/abc123/store-api" {
  capabilities = ["read", "create", "update"]
}

path "secret/metadata/bigcommerce/abc123/store-api" {
  capabilities = ["read"]
}

# --- Vault itself ------------------------------------------------------------------------------
# Which node is active (also reachable without a token).
path "sys/health" {
  capabilities = ["read"]
}

# Preflight: is a mount KV v2?
path "sys/internal/ui/mounts/*" {
  capabilities = ["read"]
}

# Preflight: may this token write the secret and the state record?
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# The token's own TTL and validity, and its renewal.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
