
keep(ARGV[11])
return roster({hold(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])})
