"""The chat domain: the client protocol, sessions, rooms and their fan-out, per-room order and
gap repair, presence views, the heartbeat."""
