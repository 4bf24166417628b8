#!lua flags=allow-oom
-- schedule_paused: pause or resume one schedule, creating its record. A resume moves the last
-- tick up to ARGV[4] when it is earlier, so that the ticks of the pause are passed over.
--
-- KEYS (keys.py): none of the queue's indexes; reads and writes the schedule's record
--   T:schedule:<name> (see fire_schedule.lua), in the slot of the queue its jobs go to.
-- ARGV[1] T; ARGV[2] schedule name; ARGV[3] '1' pause | '0' resume; ARGV[4] the time a resume
--   starts from.
-- Returns the record's fields: {last_tick, last_job_id, last_job_tick, last_fired_at, paused}
--   ('' where absent).
-- validates: the name, the flag, the time.
local name = ARGV[2]
if type(name) ~= 'string' or name == '' then
    refuse('schedule name', name)
end
local paused = ARGV[3]
if paused ~= '1' and paused ~= '0' then
    refuse('paused flag', paused)
end
local at = finite_arg(ARGV[4], 'resume time')
local record = TAG .. ':schedule:' .. name
redis.call('HSET', record, 'paused', paused)
if paused == '0' then
    local last = tonumber(redis.call('HGET', record, 'last_tick') or '')
    if last == nil or last < at then
        redis.call('HSET', record, 'last_tick', ARGV[4])
    end
end
local f = redis.call('HMGET', record, 'last_tick', 'last_job_id', 'last_job_tick',
    'last_fired_at', 'paused')
for i = 1, 5 do
    f[i] = f[i] or ''
end
return f
