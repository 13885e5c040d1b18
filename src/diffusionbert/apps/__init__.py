"""Jobs built from the library, each behind a command: the demo, the benchmarks, the Table 2 reproduction.
Nothing in the library imports them."""
