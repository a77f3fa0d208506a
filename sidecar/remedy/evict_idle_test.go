package remedy

import "testing"

// A partition read in the window more than a tenth as much as the busiest
// is not cold, wherever it ranks; with nothing read, all rank as cold.
func TestReadIdle(t *testing.T) {
	for _, c := range []struct {
		name   string
		window []int64 // sorted coldest first, as coldest sorts them
		want   int
	}{
		{"two idle of six", []int64{0, 0, 900, 1000, 1000, 1100}, 2},
		{"a trickle is idle", []int64{0, 50, 200, 900, 1000, 1100}, 2},
		{"exactly a tenth is idle", []int64{0, 110, 1000, 1100}, 2},
		{"all read alike", []int64{1000, 1000, 1000}, 0},
		{"nothing read in the window", []int64{0, 0, 0, 0}, 4},
	} {
		parts := make([]coldPartition, len(c.window))
		for i, w := range c.window {
			parts[i].WindowRead = w
		}
		if got := readIdle(parts); got != c.want {
			t.Errorf("%s: readIdle(%v) = %d, want %d", c.name, c.window, got, c.want)
		}
	}
	if got := noopReason(4, 0, 0); got != "all 4 partitions were read in the last window: none is cold" {
		t.Errorf("noop reason with no idle partition: %q", got)
	}
}
