-- raise.lua: raise a key holding an unsigned decimal number, never lower it.
--
-- pgfanout uses it for the read-your-writes key (redis.ryw_key: the LSN through which every
-- invalidation is done) and, in the second pass, for generation keys (generation: lsn), so
-- that a late or repeated write of an older position cannot move either key backwards.
--
-- KEYS[1]  the key
-- ARGV[1]  an unsigned decimal integer without leading zeros
--
-- Returns  1  the key now holds ARGV[1]
--          0  it already held a number at least as large (left as it was)
--
-- The numbers are compared as strings, length first, so LSNs above 2^53 stay exact, which
-- Lua's doubles would not.
local cur = redis.call('GET', KEYS[1])
local new = ARGV[1]
if cur and (#cur > #new or (#cur == #new and cur >= new)) then
  return 0
end
redis.call('SET', KEYS[1], new)
return 1
