"""The benchmarks: one module per experiment (`python -m bench.NAME`), the statistics they
share (`bench.stats`, tested in tests/bench) and the local-run harness (`bench.harness`).
Results go to bench/results/; bench/README.md gives the current ones."""
