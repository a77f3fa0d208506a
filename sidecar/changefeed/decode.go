package changefeed

import (
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
)

// Column names whose values attribute a change to an IVF list and a shard.
const (
	listColumn  = "ivf_list"
	shardColumn = "shard"
)

// relInfo is what a pgoutput Relation message told us about a relation.
// pgoutput sends one before the first change of a relation in a session and
// again after its schema changes, so the column positions stay current.
type relInfo struct {
	id              uint32
	namespace, name string
	listCol         int // position of ivf_list, -1 when absent
	shardCol        int
	// listInKey/shardInKey: the column is part of the replica identity, so
	// a delete's old tuple carries its value (always true for REPLICA
	// IDENTITY FULL; pgoutput sends non-key columns of a key tuple as NULL).
	listInKey  bool
	shardInKey bool
}

// leafMeta is what the catalog says about a published relation.
type leafMeta struct {
	namespace, name string
	root            uint32 // collection's root table
	shard           int64  // single-integer LIST bound, -1 when not known
	deletes         bool   // published for update/delete (has a usable replica identity)
}

// decoder turns pgoutput messages into per-transaction tallies. It is not
// safe for concurrent use: the Feed calls it under its lock.
type decoder struct {
	rels  map[uint32]*relInfo
	meta  map[uint32]leafMeta
	inTxn bool
	txn   tally
	// changes counts the row changes decoded.
	changes int64
}

func newDecoder() *decoder {
	return &decoder{rels: map[uint32]*relInfo{}, meta: map[uint32]leafMeta{}, txn: newTally()}
}

// reset forgets a transaction cut short by a lost connection: the server
// sends it again from the confirmed LSN, and counting only at commit is what
// keeps that redelivery from double counting.
func (d *decoder) reset() {
	d.inTxn = false
	d.txn = newTally()
}

// decode handles one pgoutput message. It returns the commit message when
// the message ended a transaction; the transaction's tally is then in d.txn
// until the next Begin.
func (d *decoder) decode(data []byte) (*pglogrepl.CommitMessage, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty pgoutput message")
	}
	// We never ask for streaming, so ParseV2 with inStream=false decodes
	// every message the server can send us.
	msg, err := pglogrepl.ParseV2(data, false)
	if err != nil {
		return nil, fmt.Errorf("parse pgoutput %q message: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessageV2:
		d.relation(&m.RelationMessage)
	case *pglogrepl.BeginMessage:
		d.inTxn = true
		d.txn = newTally()
	case *pglogrepl.CommitMessage:
		d.inTxn = false
		return m, nil
	case *pglogrepl.InsertMessageV2:
		rel, err := d.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		d.changes++
		d.count(rel, m.Tuple, true, func(c *Counts) { c.Inserts++ })
	case *pglogrepl.DeleteMessageV2:
		rel, err := d.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		d.changes++
		d.count(rel, m.OldTuple, false, func(c *Counts) { c.Deletes++ })
	case *pglogrepl.UpdateMessageV2:
		rel, err := d.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		d.changes++
		d.update(rel, m)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			c := d.txn.rels[id]
			c.Truncates++
			d.txn.rels[id] = c
		}
	case *pglogrepl.TypeMessageV2, *pglogrepl.OriginMessage, *pglogrepl.LogicalDecodingMessageV2:
		// Nothing to count.
	default:
		return nil, fmt.Errorf("unexpected pgoutput message %T (streaming is not requested)", msg)
	}
	return nil, nil
}

func (d *decoder) relation(m *pglogrepl.RelationMessage) {
	ri := &relInfo{id: m.RelationID, namespace: m.Namespace, name: m.RelationName, listCol: -1, shardCol: -1}
	for i, c := range m.Columns {
		// Flags bit 1: the column is part of the replica identity.
		inKey := c.Flags&1 != 0
		switch c.Name {
		case listColumn:
			ri.listCol, ri.listInKey = i, inKey
		case shardColumn:
			ri.shardCol, ri.shardInKey = i, inKey
		}
	}
	d.rels[m.RelationID] = ri
}

func (d *decoder) rel(id uint32) (*relInfo, error) {
	ri, ok := d.rels[id]
	if !ok {
		// The protocol guarantees a Relation message first; without it the
		// column positions are unknown, so the session is broken.
		return nil, fmt.Errorf("change for relation %d before its Relation message", id)
	}
	return ri, nil
}

// root is the collection a relation's lists and shards belong to.
func (d *decoder) root(id uint32) uint32 {
	if m, ok := d.meta[id]; ok && m.root != 0 {
		return m.root
	}
	return id
}

// intColumn reads an integer column from a tuple; ok is false when the
// tuple does not carry it (absent, NULL, unchanged TOAST, not an integer).
func intColumn(t *pglogrepl.TupleData, col int) (int64, bool) {
	if t == nil || col < 0 || col >= len(t.Columns) {
		return 0, false
	}
	c := t.Columns[col]
	if c.DataType != pglogrepl.TupleDataTypeText {
		return 0, false
	}
	v, err := strconv.ParseInt(string(c.Data), 10, 64)
	return v, err == nil
}

// count files one insert (full new tuple) or delete (old tuple: key columns
// only unless REPLICA IDENTITY FULL) under its relation, list and shard.
func (d *decoder) count(rel *relInfo, t *pglogrepl.TupleData, full bool, inc func(*Counts)) {
	c := d.txn.rels[rel.id]
	inc(&c)
	d.txn.rels[rel.id] = c
	root := d.root(rel.id)

	if rel.listCol >= 0 {
		if full || rel.listInKey {
			if v, ok := intColumn(t, rel.listCol); ok {
				k := ListKey{root, v}
				lc := d.txn.lists[k]
				inc(&lc)
				d.txn.lists[k] = lc
			}
		} else {
			d.txn.unattributedListDeletes[root]++
		}
	}

	shard, ok := int64(0), false
	if rel.shardCol >= 0 && (full || rel.shardInKey) {
		shard, ok = intColumn(t, rel.shardCol)
	}
	if !ok {
		// A LIST partition with one value holds exactly one shard, so a
		// delete that only carries the key is still attributed.
		if m, found := d.meta[rel.id]; found && m.shard >= 0 {
			shard, ok = m.shard, true
		}
	}
	if ok {
		k := ShardKey{root, shard}
		sc := d.txn.shards[k]
		inc(&sc)
		d.txn.shards[k] = sc
	}
}

// update counts an update on its relation. When the old and new tuples both
// carry the IVF list (or shard) and it changed, the row moved: that is a
// delete from the old list and an insert into the new one, which is what
// the per-list rates are for. (Moves between partitions already arrive as a
// delete on one and an insert on the other.)
func (d *decoder) update(rel *relInfo, m *pglogrepl.UpdateMessageV2) {
	c := d.txn.rels[rel.id]
	c.Updates++
	d.txn.rels[rel.id] = c
	if m.OldTuple == nil {
		return
	}
	root := d.root(rel.id)
	oldFull := m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld
	if rel.listCol >= 0 && (oldFull || rel.listInKey) {
		ov, ok1 := intColumn(m.OldTuple, rel.listCol)
		nv, ok2 := intColumn(m.NewTuple, rel.listCol)
		if ok1 && ok2 && ov != nv {
			o, n := d.txn.lists[ListKey{root, ov}], d.txn.lists[ListKey{root, nv}]
			o.Deletes++
			n.Inserts++
			d.txn.lists[ListKey{root, ov}], d.txn.lists[ListKey{root, nv}] = o, n
		}
	}
}
