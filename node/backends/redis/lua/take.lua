
return take(KEYS, {tonumber(ARGV[1])}, {ARGV[2]}, {1}) == 0 and 1 or 0
