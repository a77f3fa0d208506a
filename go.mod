module github.com/ruvector/ruvector-healing

go 1.23
