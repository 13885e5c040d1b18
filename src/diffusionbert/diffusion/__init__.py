"""The math of the diffusions, on token ids: noise schedules, the forward process and its posterior, losses,
the objectives of every family and their reverse processes. Imports only torch and the package's errors:
nothing here knows a model, a file or a config."""
