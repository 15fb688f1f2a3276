"""The benchmarks behind `scripts/bench`: tempwatch against its peers, side by side.

One module per concern: `cli` (options, order, output), `report` (figures, ratios, the
table and the JSON), `procs` (child processes, always stopped), `trees` (making and ageing
files), `child` and `readers` (what runs in the child processes), and one `bench_*` module
per group of benchmarks of issue 5.
"""

__all__: list[str] = []
