# rotator: the Vault / OpenBao policy of the rotator daemon.
#
# Scope: the KV v2 mount "secret", every target stored under "rotator/", i.e. targets
# configured as
#     vault_mount = "secret"
#     vault_path  = "rotator/count/billing-export"
# For another mount or prefix, change the two KV paths below (KV v2 puts "data/" and
# "metadata/" between the mount and the secret's path).
#
# What rotator does (rotator/adapters/vault.py), and the capability each call needs:
#   GET  secret/data/<path>[?version=N]    read the current version, or a given one
#                                          (the base of a write, a rollback)     -> read
#   POST secret/data/<path> {options.cas}  check-and-set write of a new version  -> update
#   POST secret/metadata/<path>            set custom_metadata (rotator_key_id,
#                                          rotator_rotation_id, ...)             -> update
# That is all. In particular:
# - no "create": rotator only ever writes a new version of a secret that exists (it
#   refuses to rotate a target whose secret is missing), and Vault checks "update" for
#   that. Whoever seeds a target's first key writes it with another identity.
# - no "list", "delete", "patch" or "sudo", and nothing on secret/delete/,
#   secret/undelete/ or secret/destroy/: rotator never deletes, undeletes or destroys a
#   version, and never deletes metadata.
# - no "read" on metadata/: custom metadata comes back with every data read.
#
# Caveats: "update" on metadata/ also lets the token change max_versions,
# delete_version_after and cas_required of secrets under rotator/ (Vault has no narrower
# grant for custom_metadata alone). Parameter constraints (allowed_parameters,
# required_parameters) are not supported on KV v2 paths, so a policy cannot force
# check-and-set: set cas_required = true on the mount's config or on each secret's
# metadata to make Vault refuse any write without it (rotator always sends cas).

path "secret/data/rotator/*" {
  capabilities = ["read", "update"]
}

path "secret/metadata/rotator/*" {
  capabilities = ["update"]
}

# The token's own upkeep: verifying it (lookup-self, also the readiness check) and renewing
# it before it expires (renew-self). Vault's and OpenBao's built-in "default" policy
# already grants both; they are repeated here so that a token or role created with
# no_default_policy / token_no_default_policy = true works too.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
