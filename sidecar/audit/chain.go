package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// chainLock is the advisory lock (two-int form, namespace 0x52564845 "RVHE")
// that serialises sealing: two sealers reading the same tail would fork the
// chain, and the UNIQUE chain_seq would then fail one of them.
const chainLockSQL = `SELECT pg_advisory_xact_lock(1381386309, 1)`

// ErrNotFound is returned by Seal when the record does not exist.
var ErrNotFound = errors.New("audit: record not found")

// Seal adds record id to the chain inside tx: it takes the chain lock,
// links the record to the current tail, and writes its hash and signature.
// The caller writes the record's final content in the same transaction,
// before Seal, and commits after it.
func Seal(ctx context.Context, tx pgx.Tx, key *Key, id int64) (Record, error) {
	if _, err := tx.Exec(ctx, chainLockSQL); err != nil {
		return Record{}, fmt.Errorf("audit: chain lock: %w", err)
	}
	var tailSeq int64
	var tailHash []byte
	err := tx.QueryRow(ctx, `SELECT chain_seq, record_hash FROM ruvector.healing_outcomes
		WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1`).Scan(&tailSeq, &tailHash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return Record{}, fmt.Errorf("audit: chain tail: %w", err)
	}
	rec, err := Scan(tx.QueryRow(ctx, `UPDATE ruvector.healing_outcomes
		SET chain_seq = $2, prev_hash = $3, key_id = $4 WHERE id = $1 AND chain_seq IS NULL
		RETURNING `+Columns, id, tailSeq+1, tailHash, key.ID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, fmt.Errorf("%w: id %d (or it is already sealed)", ErrNotFound, id)
	}
	if err != nil {
		return Record{}, fmt.Errorf("audit: seal %d: %w", id, err)
	}
	canon := rec.Canonical()
	rec.RecordHash = rec.Hash()
	rec.Signature = key.Sign(canon)
	if _, err := tx.Exec(ctx, `UPDATE ruvector.healing_outcomes SET record_hash = $2, signature = $3 WHERE id = $1`,
		id, rec.RecordHash, rec.Signature); err != nil {
		return Record{}, fmt.Errorf("audit: seal %d: %w", id, err)
	}
	return rec, nil
}

// Problem is one verification failure.
type Problem struct {
	ChainSeq int64  `json:"chain_seq"`
	ID       int64  `json:"id"`
	Kind     string `json:"kind"`
	Detail   string `json:"detail"`
}

// Problem kinds.
const (
	KindMissing      = "missing_records"
	KindBrokenLink   = "broken_link"
	KindHashMismatch = "hash_mismatch"
	KindBadSignature = "bad_signature"
	KindUnknownKey   = "unknown_key"
	KindTruncated    = "truncated"
)

// Report is the result of Verify.
type Report struct {
	Records  int       `json:"records"`
	Unsealed int       `json:"unsealed"`
	Problems []Problem `json:"problems"`
}

// OK reports whether the chain verified.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Verify checks the whole chain: contiguous chain_seq from 1, links,
// hashes recomputed from the stored rows, and each signature against the
// public key its key_id names in ruvector.healing_audit_keys. minRecords is
// the chain length the caller last saw (0 if unknown): fewer records now
// means the newest ones were deleted, which the links alone cannot show.
func Verify(ctx context.Context, q Querier, minRecords int64) (Report, error) {
	keys := map[string]ed25519.PublicKey{}
	rows, err := q.Query(ctx, `SELECT key_id, public_key FROM ruvector.healing_audit_keys`)
	if err != nil {
		return Report{}, fmt.Errorf("audit: read keys: %w", err)
	}
	for rows.Next() {
		var id string
		var pub []byte
		if err := rows.Scan(&id, &pub); err != nil {
			rows.Close()
			return Report{}, fmt.Errorf("audit: read keys: %w", err)
		}
		keys[id] = ed25519.PublicKey(pub)
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("audit: read keys: %w", err)
	}

	var rep Report
	rows, err = q.Query(ctx, `SELECT `+Columns+` FROM ruvector.healing_outcomes
		WHERE chain_seq IS NOT NULL ORDER BY chain_seq`)
	if err != nil {
		return Report{}, fmt.Errorf("audit: read chain: %w", err)
	}
	defer rows.Close()
	expect := int64(1)
	var prev []byte
	add := func(r Record, kind, detail string) {
		rep.Problems = append(rep.Problems, Problem{ChainSeq: *r.ChainSeq, ID: r.ID, Kind: kind, Detail: detail})
	}
	for rows.Next() {
		r, err := Scan(rows)
		if err != nil {
			return Report{}, fmt.Errorf("audit: read chain: %w", err)
		}
		rep.Records++
		seq := *r.ChainSeq
		if seq != expect {
			add(r, KindMissing, fmt.Sprintf("records %d to %d are missing", expect, seq-1))
		}
		if !bytes.Equal(r.PrevHash, prev) {
			add(r, KindBrokenLink, "prev_hash does not match the previous record's record_hash")
		}
		canon := r.Canonical()
		if !bytes.Equal(r.Hash(), r.RecordHash) {
			add(r, KindHashMismatch, "record_hash does not match the record: it was altered after sealing")
		}
		switch pub, ok := keys[derefOr(r.KeyID, "")]; {
		case !ok:
			add(r, KindUnknownKey, fmt.Sprintf("key %q is not in ruvector.healing_audit_keys", derefOr(r.KeyID, "")))
		case len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, canon, r.Signature):
			add(r, KindBadSignature, fmt.Sprintf("signature does not verify with key %s", *r.KeyID))
		}
		prev = r.RecordHash
		expect = seq + 1
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("audit: read chain: %w", err)
	}
	if expect-1 < minRecords {
		rep.Problems = append(rep.Problems, Problem{ChainSeq: expect - 1, Kind: KindTruncated,
			Detail: fmt.Sprintf("the chain ends at %d but %d records were seen before", expect-1, minRecords)})
	}
	if err := q.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes WHERE chain_seq IS NULL`).Scan(&rep.Unsealed); err != nil {
		return Report{}, fmt.Errorf("audit: count unsealed: %w", err)
	}
	return rep, nil
}

func derefOr(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}
