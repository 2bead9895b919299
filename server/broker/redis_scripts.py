"""The Lua scripts of the Redis broker: each check-and-write runs atomically in Redis.

Keys of one room share the hash tag ``{room}`` so that a Redis Cluster keeps them in one
slot (docs/scaling.md):

- ``P:{room}:meta``    hash: ``epoch``, ``seq``, ``fence``, ``turns``, ``streaming``
- ``P:{room}:lease``   string: the fence holding the turn lease, with an expiry
- ``P:{room}:events``  stream: one entry per sequenced event, id ``{seq}-0``, fields
  ``d`` (wire JSON) and ``k`` (room or tap), trimmed to ``rooms.retained_events``
- ``P:{room}:turns``   list: the newest ended turns (TURN objects), oldest first
- ``P:{room}:prompt:{id}``  string ``"{turn} {seq}"``, expiring: idempotency
- ``P:{room}:viewers`` hash: instance -> ``"{count} {until_ms}"``
- meta, events and turns expire ``broker.room_ttl_seconds`` after a room's last event
- channel ``P:{room}``: ``E {epoch} {kind} {seq} {json}`` per event, ``P {instance}`` when a
  viewer count changed
"""

# ARGV: the new epoch, or '' to read only a room that exists ({} when it does not).
LOAD = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[1] == '' then return {} end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0, 'fence', 0, 'turns', 0)
  epoch = ARGV[1]
end
local meta = redis.call('HMGET', KEYS[1], 'seq', 'turns')
return {epoch, meta[1], meta[2] or '0',
        redis.call('LRANGE', KEYS[3], 0, -1),
        redis.call('XRANGE', KEYS[2], '-', '+')}
"""

# A wiped room stored again from an instance's replica, only when Redis has no history of it
# (no epoch, or an epoch with no event and no streaming turn). ARGV: epoch, seq, turns,
# streaming ('' none), lease ('1' to take it), lease_ms, room_ttl_s, n_ended, the ended turns,
# n, then n x (seq, kind, data).
SEED = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'streaming')
if meta[1] and (tonumber(meta[2] or '0') > 0 or meta[3]) then return {'taken'} end
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', ARGV[2], 'fence', fence, 'turns', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'streaming', ARGV[4]) end
local ended = tonumber(ARGV[8])
for i = 1, ended do redis.call('RPUSH', KEYS[3], ARGV[8 + i]) end
local at = 9 + ended
for i = 0, tonumber(ARGV[at]) - 1 do
  local s, kind, data = ARGV[at + 1 + i * 3], ARGV[at + 2 + i * 3], ARGV[at + 3 + i * 3]
  redis.call('XADD', KEYS[2], s .. '-0', 'd', data, 'k', kind)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
if ARGV[5] == '1' then
  fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
  redis.call('SET', KEYS[4], fence, 'PX', ARGV[6])
  return {'ok', tostring(fence)}
end
return {'ok', '0'}
"""

READ = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if meta[1] ~= ARGV[1] then return {'epoch'} end
local seq = tonumber(meta[2])
local after = tonumber(ARGV[2])
if after > seq then return {'gone'} end
if after == seq then return {'ok', {}} end
local first = tostring(after + 1) .. '-0'
local entries = redis.call('XRANGE', KEYS[2], first, '+')
if #entries == 0 or entries[1][1] ~= first then return {'gone'} end
return {'ok', entries}
"""

CLAIM = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'streaming')
if meta[1] ~= ARGV[1] then return {'epoch'} end
if ARGV[4] == '1' then
  local known = redis.call('GET', KEYS[3])
  if known then return {'known', known} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', meta[2], meta[3] or ''} end
if meta[3] then return {'orphan', meta[2], meta[3]} end
if meta[2] ~= ARGV[2] then return {'stale', meta[2]} end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], fence, 'PX', ARGV[3])
return {'ok', tostring(fence), meta[2]}
"""

STEAL = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'streaming')
if meta[1] ~= ARGV[1] then return {'epoch'} end
if meta[3] ~= ARGV[2] then return {'gone', meta[2]} end
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return {'alive', meta[2]} end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], fence, 'PX', ARGV[4])
return {'ok', tostring(fence), meta[2]}
"""

# ARGV: epoch, fence, lease_ms, maxlen, keep_turns, channel, prompt_ttl_s, started_turn,
# has_prompt, ended, room_ttl_s, n, then n x (seq, kind, data), then the upstream position
# ('' for none). Idempotent: a retried write whose first attempt was stored answers ok and
# stores nothing twice.
APPEND = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if meta[1] ~= ARGV[1] then return {'epoch'} end
local seq = tonumber(meta[2])
local n = tonumber(ARGV[12])
if n > 0 and seq >= tonumber(ARGV[13]) + n - 1 then
  -- the same write again (its reply was lost and it was retried): already stored
  local id = ARGV[13] .. '-0'
  local kept = redis.call('XRANGE', KEYS[3], id, id)
  if #kept == 1 and kept[1][2][2] == ARGV[15] then return {'ok'} end
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {'fenced'} end
for i = 0, n - 1 do
  if tonumber(ARGV[13 + i * 3]) ~= seq + 1 + i then return {'stale', meta[2]} end
end
for i = 0, n - 1 do
  local s, kind, data = ARGV[13 + i * 3], ARGV[14 + i * 3], ARGV[15 + i * 3]
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], s .. '-0', 'd', data, 'k', kind)
  redis.call('PUBLISH', ARGV[6], 'E ' .. ARGV[1] .. ' ' .. kind .. ' ' .. s .. ' ' .. data)
end
redis.call('HSET', KEYS[1], 'seq', seq + n)
if ARGV[13 + n * 3] ~= '' then redis.call('HSET', KEYS[1], 'position', ARGV[13 + n * 3]) end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'streaming', ARGV[8])
  redis.call('HINCRBY', KEYS[1], 'turns', 1)
  if ARGV[9] == '1' then
    redis.call('SET', KEYS[5], ARGV[8] .. ' ' .. tostring(seq + 1), 'EX', ARGV[7])
  end
end
if ARGV[10] ~= '' then
  redis.call('HDEL', KEYS[1], 'streaming', 'position')
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[4], ARGV[10])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[11])
redis.call('EXPIRE', KEYS[3], ARGV[11])
redis.call('EXPIRE', KEYS[4], ARGV[11])
return {'ok'}
"""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: instance, count (-1 only reads), alive_ms, channel, announce
VIEWERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. tostring(now + tonumber(ARGV[3])))
elseif count == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, untl = string.match(all[i + 1], '^(%d+) (%d+)$')
  if n and tonumber(untl) > now then total = total + tonumber(n)
  else redis.call('HDEL', KEYS[1], all[i]) end
end
if ARGV[5] == '1' then redis.call('PUBLISH', ARGV[4], 'P ' .. ARGV[1]) end
return total
"""
