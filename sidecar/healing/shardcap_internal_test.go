package healing

import "testing"

func TestShardCap(t *testing.T) {
	for _, tc := range []struct {
		rate, median float64
		pct          uint32
		want         uint32
	}{
		{2000, 50, 90, 50},  // a runaway writer: down to its peers' pace, not to 200
		{2000, 0, 90, 200},  // nobody else writes: 10% of its own
		{2000, 0, 50, 1000}, // stress: half
		{60, 50, 90, 50},    // slightly above its peers: to their pace, not to 6
		{40, 50, 90, 40},    // below its peers (a read hotspot): not cut
		{0.2, 0, 90, 1},     // floor
	} {
		if got := shardCap(tc.rate, tc.median, tc.pct); got != tc.want {
			t.Errorf("shardCap(%v, %v, %d) = %d, want %d", tc.rate, tc.median, tc.pct, got, tc.want)
		}
	}
}
