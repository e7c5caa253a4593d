local out = {}
local topics = redis.call('SMEMBERS', KEYS[1])
table.sort(topics)
for _, t in ipairs(topics) do
  local owner = redis.call('GET', ARGV[1] .. t)
  if owner then
    out[#out + 1] = t
    out[#out + 1] = owner
    out[#out + 1] = redis.call('GET', ARGV[2] .. t) or ''
  else
    redis.call('SREM', KEYS[1], t)
  end
end
return out
