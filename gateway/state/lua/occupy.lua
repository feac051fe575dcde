-- occupy / release: count one more (delta 1) or one fewer (delta -1) session of a channel on
-- an agent, without the admission rules (occupy restores sessions that already exist). A
-- release of a session that is not held is refused and changes nothing.
-- KEYS[1]: the agent's hash; KEYS[2]: the set of agent ids; KEYS[3]: the agent's held sessions
-- ARGV: channel, weight, delta (1 or -1), agent id, session id (occupy only; "": anonymous;
--       an id already held is not counted twice)
-- Returns the state as reserve.lua does, the last field 1 if counted now else 0.
local key = KEYS[1]
local channel = ARGV[1]
local weight = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
local f = redis.call('HMGET', key, 'presence', 'reason', 'sessions', 'units', 'voice', 'chat', 'email', 'manual', 'version')
local n = {}
for i = 3, 9 do n[i] = tonumber(f[i] or '0') end
local sessions, units, version = n[3], n[4], n[9]
local of = {voice = n[5], chat = n[6], email = n[7], manual = n[8]}
if of[channel] == nil then
  return redis.error_reply('ERR unknown channel ' .. channel)
end
local sid = ARGV[5] or ''
if delta > 0 and sid ~= '' and redis.call('HEXISTS', KEYS[3], sid) == 1 then
  return {'', f[1] or 'offline', f[2] or '', sessions, units, of.voice, of.chat, of.email, of.manual, version, 0}
end
if delta < 0 and (of[channel] < 1 or sessions < 1 or units < weight) then
  return redis.error_reply('NOTHELD no ' .. channel .. ' session of weight ' .. weight .. ' is held')
end
sessions = sessions + delta
units = units + delta * weight
of[channel] = of[channel] + delta
version = version + 1
redis.call('HSET', key, 'sessions', sessions, 'units', units, channel, of[channel], 'version', version)
redis.call('SADD', KEYS[2], ARGV[4])
if delta > 0 and sid ~= '' then
  redis.call('HSET', KEYS[3], sid, channel .. ' ' .. weight)
end
return {'', f[1] or 'offline', f[2] or '', sessions, units, of.voice, of.chat, of.email, of.manual, version, 1}
