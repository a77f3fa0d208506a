// Package audit signs and chains the healing engine's records in
// ruvector.healing_outcomes, and verifies the chain.
//
// A record joins the chain when it is sealed: it takes the next chain_seq,
// the previous record's record_hash as prev_hash, record_hash =
// sha256(canonical bytes) and an Ed25519 signature of the canonical bytes by
// the sidecar's key. Altering a sealed record changes its canonical bytes;
// deleting one leaves a gap in chain_seq and a prev_hash that points
// nowhere; moving one (changing chain_seq) does both. Both sides check
// all of it: the SQL function ruvector_healing_verify_audit() checks the
// hashes, the links and each signature (Ed25519 in the server,
// ruvector._ed25519_verify of extension_stub/signature.c, against the keys
// in ruvector.healing_audit_keys), and Verify here does the same from Go.
//
// The canonical bytes are defined once, in SQL (ruvector._healing_canonical)
// and here (Record.Canonical), with an encoding that neither side has to
// interpret: NULL is 0x00, a value is 0x01 followed by fixed-width
// big-endian integers (booleans as 0/1), the IEEE bits of a real,
// microseconds since the Unix epoch for a timestamp, or a 4-byte length and
// the bytes for text, bytea and jsonb. jsonb is taken as PostgreSQL's text
// of the stored value, which Go reads back (col::text) rather than
// re-rendering, because jsonb normalises its input.
//
// Limits: a record is protected from sealing on; a running (unsealed)
// record is not. Truncating the newest records is not detectable from the
// table alone (the shortened chain is still consistent); Verify takes the
// caller's last known chain length to catch it.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"time"
)

// Version tags the canonical form; it is the first field.
const Version = "ruvector.healing_outcomes/v1"

// Record is one healing_outcomes row as the chain sees it. Pointers are
// nullable columns; JSON columns hold PostgreSQL's text of the jsonb value.
type Record struct {
	ChainSeq       *int64
	ID             int64
	CollectionID   int64
	TenantID       *string
	ProblemClass   string
	ProblemDetails string
	StrategyName   string
	StrategyParams *string
	StartedAt      time.Time
	CompletedAt    *time.Time
	DurationMS     *int64
	Success        bool
	Verified       *bool
	ActionsTaken   *int64
	ImprovementPct *float32
	ErrorMessage   *string
	InitialLambda  float32
	FinalLambda    *float32
	WitnessEdges   *string
	SystemMetrics  *string
	CreatedAt      *time.Time
	State          string
	Decision       *string
	RolledBack     bool
	Metadata       string
	KeyID          *string
	PrevHash       []byte

	// Not part of the canonical bytes.
	RecordHash []byte
	Signature  []byte
}

// Columns selects a Record in Scan's order; jsonb columns as text.
const Columns = `chain_seq, id, collection_id, tenant_id, problem_class, problem_details::text,
	strategy_name, strategy_params::text, started_at, completed_at, duration_ms, success, verified,
	actions_taken, improvement_pct, error_message, initial_lambda, final_lambda, witness_edges::text,
	system_metrics::text, created_at, state, decision::text, rolled_back, metadata::text, key_id,
	prev_hash, record_hash, signature`

// Row is what Scan reads from (pgx.Row and pgx.Rows).
type Row interface {
	Scan(dest ...any) error
}

// Scan reads a Record selected with Columns.
func Scan(row Row) (Record, error) {
	var r Record
	var collectionID int32
	var duration, actions *int32
	err := row.Scan(&r.ChainSeq, &r.ID, &collectionID, &r.TenantID, &r.ProblemClass, &r.ProblemDetails,
		&r.StrategyName, &r.StrategyParams, &r.StartedAt, &r.CompletedAt, &duration, &r.Success, &r.Verified,
		&actions, &r.ImprovementPct, &r.ErrorMessage, &r.InitialLambda, &r.FinalLambda, &r.WitnessEdges,
		&r.SystemMetrics, &r.CreatedAt, &r.State, &r.Decision, &r.RolledBack, &r.Metadata, &r.KeyID,
		&r.PrevHash, &r.RecordHash, &r.Signature)
	if err != nil {
		return Record{}, err
	}
	r.CollectionID = int64(collectionID)
	if duration != nil {
		d := int64(*duration)
		r.DurationMS = &d
	}
	if actions != nil {
		a := int64(*actions)
		r.ActionsTaken = &a
	}
	return r, nil
}

type encoder struct{ b []byte }

func (e *encoder) null() { e.b = append(e.b, 0) }
func (e *encoder) bytes(v []byte) {
	e.b = append(e.b, 1)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *encoder) text(v string) { e.bytes([]byte(v)) }
func (e *encoder) int(v int64) {
	e.b = append(e.b, 1)
	e.b = binary.BigEndian.AppendUint64(e.b, uint64(v))
}
func (e *encoder) real(v float32) {
	e.b = append(e.b, 1)
	e.b = binary.BigEndian.AppendUint32(e.b, math.Float32bits(v))
}
func (e *encoder) time(v time.Time) { e.int(v.UnixMicro()) }
func (e *encoder) bool(v bool) {
	if v {
		e.int(1)
	} else {
		e.int(0)
	}
}
func (e *encoder) optText(v *string) {
	if v == nil {
		e.null()
	} else {
		e.text(*v)
	}
}
func (e *encoder) optInt(v *int64) {
	if v == nil {
		e.null()
	} else {
		e.int(*v)
	}
}
func (e *encoder) optReal(v *float32) {
	if v == nil {
		e.null()
	} else {
		e.real(*v)
	}
}
func (e *encoder) optTime(v *time.Time) {
	if v == nil {
		e.null()
	} else {
		e.time(*v)
	}
}
func (e *encoder) optBool(v *bool) {
	if v == nil {
		e.null()
	} else {
		e.bool(*v)
	}
}
func (e *encoder) optBytes(v []byte) {
	if v == nil {
		e.null()
	} else {
		e.bytes(v)
	}
}

// Canonical returns the record's canonical bytes, equal to
// ruvector._healing_canonical(row) for the same stored row.
func (r *Record) Canonical() []byte {
	e := &encoder{b: make([]byte, 0, 512)}
	e.text(Version)
	e.optInt(r.ChainSeq)
	e.int(r.ID)
	e.int(r.CollectionID)
	e.optText(r.TenantID)
	e.text(r.ProblemClass)
	e.text(r.ProblemDetails)
	e.text(r.StrategyName)
	e.optText(r.StrategyParams)
	e.time(r.StartedAt)
	e.optTime(r.CompletedAt)
	e.optInt(r.DurationMS)
	e.bool(r.Success)
	e.optBool(r.Verified)
	e.optInt(r.ActionsTaken)
	e.optReal(r.ImprovementPct)
	e.optText(r.ErrorMessage)
	e.real(r.InitialLambda)
	e.optReal(r.FinalLambda)
	e.optText(r.WitnessEdges)
	e.optText(r.SystemMetrics)
	e.optTime(r.CreatedAt)
	e.text(r.State)
	e.optText(r.Decision)
	e.bool(r.RolledBack)
	e.text(r.Metadata)
	e.optText(r.KeyID)
	e.optBytes(r.PrevHash)
	return e.b
}

// Hash is sha256 of the canonical bytes: the record_hash.
func (r *Record) Hash() []byte {
	h := sha256.Sum256(r.Canonical())
	return h[:]
}
