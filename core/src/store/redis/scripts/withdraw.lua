for i = 2, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if owner == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('SREM', KEYS[1], ARGV[i])
  elseif not owner then
    redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return 0
