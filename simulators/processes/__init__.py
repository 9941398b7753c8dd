"""The built-in process files (``default.toml``, ``small.toml``), read as package
data by ``simulators.definition.load_process``; no code, imports nothing."""
