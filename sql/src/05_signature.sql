
-- ---------------------------------------------------------------------------
-- Ed25519 verification in the server (extension_stub/signature.c, OpenSSL):
-- the audit trails (healing outcomes, integrity events) are signed by the
-- sidecar and verified here, so a reader does not have to trust a flag the
-- signer wrote. A pure function: every role may call it.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ruvector._ed25519_verify(public_key bytea, message bytea, signature bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'ruvector_ed25519_verify'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
