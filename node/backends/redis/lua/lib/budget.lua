-- Budgets in Lua, as `node.ratelimit.Budgets` keeps them in memory: token buckets kept by
-- the generic cell rate algorithm, whose whole state is one number per budget, the time (ms,
-- Redis's clock) at which its bucket is full again. `limits[i]` events at once and
-- `limits[i]` per window after that: no window edge lets a sender double its burst. `take`
-- takes `slices[i]` (or as many as are left) from every bucket, or nothing: it returns 0
-- and the grants, or the position of an empty bucket.
local function take(keys, limits, windows_ms, slices)
  if redis.replicate_commands then redis.replicate_commands() end
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
  local grants, full_at = {}, {}
  for i, key in ipairs(keys) do
    local interval = tonumber(windows_ms[i]) / limits[i]
    local start = math.max(tonumber(redis.call('GET', key) or '0'), now)
    local left = math.floor((now + windows_ms[i] - start) / interval + 1e-6)
    local grant = math.min(slices[i], left)
    if grant <= 0 then return i, grants end
    grants[i] = grant
    full_at[i] = start + grant * interval
  end
  for i, key in ipairs(keys) do
    redis.call('SET', key, string.format('%.3f', full_at[i]), 'PX',
               math.ceil(full_at[i] - now) + 1)
  end
  return 0, grants
end
