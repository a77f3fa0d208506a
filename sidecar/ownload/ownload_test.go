package ownload

import (
	"errors"
	"testing"
)

// An observation that overlapped a commit is taken again, and returns the
// totals that match its last reading; a failed commit adds nothing.
func TestObserveRetriesAcrossACommit(t *testing.T) {
	l := New()
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		done <- l.Commit(map[int64]Counts{7: {Writes: 5, SeqRead: 2}}, func() error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	reads := 0
	got, err := l.Observe(func() error {
		reads++
		if reads == 1 {
			// The commit finishes while this reading runs.
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if reads != 2 || got[7] != (Counts{Writes: 5, SeqRead: 2}) {
		t.Fatalf("%d readings, totals %v; want 2 readings and the commit's counts", reads, got)
	}

	boom := errors.New("commit failed")
	if err := l.Commit(map[int64]Counts{7: {Writes: 100}}, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed commit: %v", err)
	}
	got, _ = l.Observe(func() error { return nil })
	if got[7].Writes != 5 {
		t.Fatalf("after a failed commit: %v, want the 5 writes of the first only", got)
	}

	var none *Ledger
	if err := none.Commit(nil, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("nil ledger commit: %v", err)
	}
	if got, err := none.Observe(func() error { return nil }); got != nil || err != nil {
		t.Fatalf("nil ledger observe: %v %v", got, err)
	}
}
