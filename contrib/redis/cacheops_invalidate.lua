-- cacheops_invalidate.lua: invalidate django-cacheops 7.2's cache from row images that
-- pgfanout read from the WAL (the redis.cacheops preset; see the README, "django-cacheops").
-- pgfanout embeds this file at build time and calls it once per (transaction, table) and up
-- to 256 rows; any client may call it the same way.
--
-- KEYS[1]  <P>schemes:<db_table>, the set of field lists cacheops has cached queries on
-- ARGV[1]  P, cacheops' prefix (CACHEOPS_PREFIX must be a constant for this to hold)
-- ARGV[2]  db_table, Django's Model._meta.db_table
-- ARGV[3]  "plain" or "insideout" (CACHEOPS_INSIDEOUT)
-- ARGV[4]  a JSON array of row objects {attname: value}, each value as cacheops' own Python
--          sends it: json.dumps(get_obj_dict(...), default=str) in plain mode, every value
--          str()'d in insideout mode.  A value may also be a JSON array of variants (a
--          decimal with and without its trailing zeros): one conj key is dropped per variant.
-- ARGV[5]  "1" to invalidate the whole table (a TRUNCATE), else "0"
--
-- Returns  {conj keys dropped, cache keys deleted, 1 if it invalidated the whole table else 0}
--
-- The conj keys are built exactly as cacheops' invalidate.lua builds them: the fields in the
-- scheme's own order (never sorted: cacheops depends on that order) and each value through
-- tostring() of what cjson decoded, so number formatting (%.14g) and the text of a JSON null
-- come out as they did when cacheops wrote the key, in this same Lua interpreter.
--
-- When a scheme names a field that a row does not carry (pgfanout could not convert that
-- column's value exactly), or one row's variants would make more than 16 keys for a scheme,
-- no key can be trusted, so the whole table is invalidated instead, as cacheops'
-- invalidate_model does.  That walks SCAN MATCH <P>conj:<db_table>:* inside this one call:
-- it blocks Redis for the length of the walk, like cacheops' own KEYS.  Not for Redis
-- Cluster: the keys touched are not all declared in KEYS (as in cacheops' own scripts).
local P, tbl, mode = ARGV[1], ARGV[2], ARGV[3]
local rows = cjson.decode(ARGV[4])
local wide = ARGV[5] == '1'
local MAX_VARIANT_KEYS = 16
local deleted, dropped = 0, 0

-- Drops a list of conj keys: in plain mode their members (the cache keys) too.
local function drop(conj)
  for i = 1, #conj, 500 do
    local part = {unpack(conj, i, math.min(i + 499, #conj))}
    if mode ~= 'insideout' then
      local members = redis.call('SUNION', unpack(part))
      for j = 1, #members, 500 do
        deleted = deleted + redis.call('DEL', unpack(members, j, math.min(j + 499, #members)))
      end
    end
    dropped = dropped + redis.call('UNLINK', unpack(part))
  end
end

local schemes = redis.call('SMEMBERS', KEYS[1])
local conj, seen = {}, {}
for _, row in ipairs(rows) do
  if wide then break end
  for _, scheme in ipairs(schemes) do
    local keys, first = {P .. 'conj:' .. tbl .. ':'}, true
    for field in string.gmatch(scheme, '[^,]+') do
      local v = row[field]
      if v == nil then wide = true; break end
      local vs = (type(v) == 'table') and v or {v}
      local nextk = {}
      for _, k in ipairs(keys) do
        for _, one in ipairs(vs) do
          nextk[#nextk + 1] = k .. (first and '' or '&') .. field .. '=' .. tostring(one)
        end
      end
      if #nextk > MAX_VARIANT_KEYS then wide = true; break end
      keys, first = nextk, false
    end
    if wide then break end
    for _, k in ipairs(keys) do
      if not seen[k] then seen[k] = true; conj[#conj + 1] = k end
    end
  end
end

if wide then
  -- Glob characters in the prefix or table name must match themselves.
  local pattern = (P .. 'conj:' .. tbl .. ':'):gsub('[%*%?%[%]\\]', '\\%0') .. '*'
  local cursor = '0'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = r[1]
    if #r[2] > 0 then drop(r[2]) end
  until cursor == '0'
  return {dropped, deleted, 1}
end
if #conj > 0 then drop(conj) end
return {dropped, deleted, 0}
