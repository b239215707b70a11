"""The server API: the application's backend drives the cluster over HTTP on a listener of
its own (docs/server-api.md) — commands in `commands`, the listener in `listener`."""
