
local node, id = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local owner = redis.call('HGET', name_key(ARGV[i]), OWNER)
  if owner and owner ~= id then return owner end
end
for i = 4, #ARGV do hold_name(ARGV[i], id, node, 1) end
return ''
