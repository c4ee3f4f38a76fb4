"""`make bench`: the benchmark's parts, run in order by `python -m bench`.

`bench.transfers` (transfers through the HTTP API, the pgbench ceiling, a hot wallet), then
`bench.bulk` and `bench.reconciliation` when they exist. Each part's `main(quick)` prints its
figures and returns them as a dict; `__main__` writes them to bench/results/ as JSON.
"""
