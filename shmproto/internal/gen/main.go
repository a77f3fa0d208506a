// Command gen writes the C header of the shared-memory layout.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ruvector/ruvector-healing/shmproto/internal/cgen"
)

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gen: -o FILE is required")
		os.Exit(2)
	}
	if err := os.WriteFile(*out, cgen.Header(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
