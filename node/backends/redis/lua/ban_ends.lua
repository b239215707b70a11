-- KEYS[1]: a ban (the cluster's or a room's, of one user). Returns when it ends (Unix time),
-- or false for none: a GET, as a script so that it rides the lean pipelined connection that
-- every session's admission takes (auth, then join), not redis-py's pooled path.
return redis.call('GET', KEYS[1])
