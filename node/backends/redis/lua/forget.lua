
forget(ARGV[2], tonumber(ARGV[3]), 4)
return 1
