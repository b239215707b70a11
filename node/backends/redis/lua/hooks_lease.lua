-- Hold the lease KEYS[1] for node ARGV[1] for ARGV[2] ms: taken when free, renewed when
-- already this node's. 1: held; 0: another node holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
