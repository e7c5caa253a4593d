local nc, nh, ns, nr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A batch written before (a retry whose first reply was lost) is not counted again.
local marker = tonumber(ARGV[5])
if marker > 0 and redis.call('EXISTS', KEYS[marker]) == 1 then return {} end
local counters_at = 6
local hdr_at = counters_at + nc * 8
local conflicts = {}
for j = 0, nh - 1 do
  local q = hdr_at + j * 5
  local cur = redis.call('HGET', KEYS[tonumber(ARGV[q])], ARGV[q + 1])
  local ok
  if ARGV[q + 2] == '0' then ok = (cur == false) else ok = (cur == ARGV[q + 3]) end
  if not ok then
    conflicts[#conflicts + 1] = tostring(j)
    if cur then
      conflicts[#conflicts + 1] = '1'
      conflicts[#conflicts + 1] = cur
    else
      conflicts[#conflicts + 1] = '0'
      conflicts[#conflicts + 1] = ''
    end
  end
end
if #conflicts > 0 then return conflicts end
local names = {'sent', 'received', 'lost', 'duplicates', 'reordered', 'undecodable'}
for j = 0, nc - 1 do
  local q = counters_at + j * 8
  local key = KEYS[tonumber(ARGV[q])]
  local prefix = ARGV[q + 1] .. '/'
  for c = 1, 6 do
    redis.call('HINCRBY', key, prefix .. names[c], ARGV[q + 1 + c])
  end
end
for j = 0, nh - 1 do
  local q = hdr_at + j * 5
  redis.call('HSET', KEYS[tonumber(ARGV[q])], ARGV[q + 1], ARGV[q + 4])
end
local p = hdr_at + nh * 5
for j = 1, ns do
  redis.call('SADD', KEYS[tonumber(ARGV[p])], ARGV[p + 1])
  p = p + 2
end
for j = 1, nr do
  local key = KEYS[tonumber(ARGV[p])]
  local last = p + 1 + tonumber(ARGV[p + 1])
  p = p + 2
  while p <= last do
    local upto = math.min(p + 4999, last)
    redis.call('RPUSH', key, unpack(ARGV, p, upto))
    p = upto + 1
  end
end
-- Each writer's first and last second per topic ('first/last'), which lets a reader ask
-- for the fields of a time slice instead of reading the topic's whole hash.
local nw = tonumber(ARGV[p])
p = p + 1
for j = 1, nw do
  local key, writer = KEYS[tonumber(ARGV[p])], ARGV[p + 1]
  local first, last = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local cur = redis.call('HGET', key, writer)
  if cur then
    local a, b = string.match(cur, '^(%d+)/(%d+)$')
    if a then
      first = math.min(first, tonumber(a))
      last = math.max(last, tonumber(b))
    end
  end
  redis.call('HSET', key, writer, string.format('%d/%d', first, last))
  p = p + 4
end
if marker > 0 then redis.call('SET', KEYS[marker], '1', 'EX', 86400) end
return conflicts
