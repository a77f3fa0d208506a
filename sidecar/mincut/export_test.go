package mincut

// Hooks for the external tests (package mincut_test), which need the
// generators of package mincutgen and therefore cannot live in package mincut.

// ReferenceStoerWagner exposes the plain Stoer–Wagner reference.
func ReferenceStoerWagner(g *Graph) int64 { return referenceStoerWagner(g) }

// BruteForce exposes the exhaustive reference (n <= 20).
func BruteForce(g *Graph) int64 { return bruteForce(g) }

// VerifyResult exposes the result checker shared by all tests.
func VerifyResult(g *Graph, r Result, want int64) error { return verifyResult(g, r, want) }
