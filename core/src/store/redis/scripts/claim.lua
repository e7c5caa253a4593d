local n = tonumber(ARGV[1])
local got = {}
if n <= 0 then return got end
local topics = redis.call('SMEMBERS', KEYS[1])
table.sort(topics)
for _, t in ipairs(topics) do
  if redis.call('EXISTS', ARGV[4] .. t) == 0 then
    redis.call('SREM', KEYS[1], t)
  elseif redis.call('SET', ARGV[5] .. t, ARGV[2], 'NX', 'PX', ARGV[3]) then
    got[#got + 1] = t
    if #got >= n then break end
  end
end
return got
