-- Release the lock KEYS[1] if ARGV[1] holds it (a holder past its time may find another's).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
