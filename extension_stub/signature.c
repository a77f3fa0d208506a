/*-------------------------------------------------------------------------
 *
 * signature.c
 *		Ed25519 signature verification for the audit trails.
 *
 * The sidecar signs healing outcomes and integrity events with its Ed25519
 * key and records the public half in ruvector.healing_audit_keys. Verifying
 * in the server, with the OpenSSL the server is already linked against,
 * lets ruvector_healing_verify_audit() and ruvector_integrity_history()
 * check the signatures themselves instead of trusting a flag the signer
 * wrote: a forged row with a stale "verified" mark is caught in SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "ruvector_healing.h"

#define ED25519_PUBLIC_KEY_LEN	32
#define ED25519_SIGNATURE_LEN	64

PG_FUNCTION_INFO_V1(ruvector_ed25519_verify);

/*
 * ruvector._ed25519_verify(public_key bytea, message bytea, signature bytea)
 *		RETURNS boolean
 *
 * False for a signature that does not verify; an error only for arguments
 * that cannot be a key or a signature at all, since a caller scanning an
 * audit table wants a verdict per row rather than an aborted scan.
 */
Datum
ruvector_ed25519_verify(PG_FUNCTION_ARGS)
{
	bytea	   *pub = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	bytea	   *sig = PG_GETARG_BYTEA_PP(2);
	EVP_PKEY   *pkey;
	EVP_MD_CTX *mdctx;
	int			rc;

	if (VARSIZE_ANY_EXHDR(pub) != ED25519_PUBLIC_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an Ed25519 public key has %d bytes, got %d",
						ED25519_PUBLIC_KEY_LEN, (int) VARSIZE_ANY_EXHDR(pub)),
				 errhint("Public keys are the public_key column of ruvector.healing_audit_keys.")));
	if (VARSIZE_ANY_EXHDR(sig) != ED25519_SIGNATURE_LEN)
		PG_RETURN_BOOL(false);

	pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
									   (const unsigned char *) VARDATA_ANY(pub),
									   ED25519_PUBLIC_KEY_LEN);
	if (pkey == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the public key is not a valid Ed25519 key"),
				 errhint("Public keys are the public_key column of ruvector.healing_audit_keys.")));
	mdctx = EVP_MD_CTX_new();
	if (mdctx == NULL)
	{
		EVP_PKEY_free(pkey);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory verifying an Ed25519 signature")));
	}
	/* Ed25519 is a one-shot scheme: no digest, the whole message at once. */
	rc = EVP_DigestVerifyInit(mdctx, NULL, NULL, NULL, pkey);
	if (rc == 1)
		rc = EVP_DigestVerify(mdctx,
							  (const unsigned char *) VARDATA_ANY(sig), ED25519_SIGNATURE_LEN,
							  (const unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg));
	EVP_MD_CTX_free(mdctx);
	EVP_PKEY_free(pkey);

	PG_RETURN_BOOL(rc == 1);
}
