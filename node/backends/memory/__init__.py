"""The backends in one process: a single node without Redis, and the contract tests' reference."""
