
local function envelope(room, seq, exclude, payload, presence, epoch)
  return cmsgpack.pack({room, seq, exclude, payload, presence, epoch})
end
local function close(fragments, numbers)
  local parts = {}
  for i = 1, #fragments do parts[i] = fragments[i] .. string.format('%d', numbers[i]) end
  return table.concat(parts) .. '}'
end
local function split(stored)
  local fragments, from = {}, 1
  while true do
    local at = string.find(stored, '\0', from, true)
    if not at then table.insert(fragments, string.sub(stored, from)) return fragments end
    table.insert(fragments, string.sub(stored, from, at - 1))
    from = at + 1
  end
end
