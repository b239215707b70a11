
local limits, windows, slices = {}, {}, {}
for limit, window, slice in string.gmatch(ARGV[1], '(%d+) (%d+) (%d+)') do
  table.insert(limits, tonumber(limit))
  table.insert(windows, window)
  table.insert(slices, tonumber(slice))
end
local spent, grants = take(KEYS, limits, windows, slices)
if spent > 0 then return {spent} end
return {0, unpack(grants)}
