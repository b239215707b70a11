
for i = 2, #ARGV do
  redis.call('ZREM', CREATED, ARGV[i])
  register(ARGV[i], '1')
end
return 1
