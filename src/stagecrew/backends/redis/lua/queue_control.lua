#!lua flags=allow-oom
-- queue_control: pause or resume one queue. A paused queue keeps taking jobs; claim.lua and
-- peek.lua give none of them out while T:paused exists. Resuming leaves a wake-up token, so
-- an idle worker of the queue claims its waiting jobs at once (and passes the token on).
--
-- KEYS (keys.py): writes T:paused ("1" while paused) and, on a resume that changed something,
--   T:wake (a token). KEYS[1..11] are passed as to every script and not touched.
-- ARGV[1] T; ARGV[2] the action: pause | resume.
-- Returns 1 if the queue's state changed (paused a running queue, resumed a paused one), else 0.
-- validates: the argument count, the action.
-- Every argument is checked before the first write (see _lib.lua).
if #ARGV ~= 2 then
    refuse('argument count', #ARGV)
end
local action = ARGV[2]
if action ~= 'pause' and action ~= 'resume' then
    refuse('queue action', action)
end
local key = TAG .. ':paused'
if action == 'pause' then
    if redis.call('SET', key, '1', 'NX') then
        return 1
    end
    return 0
end
if redis.call('DEL', key) == 1 then
    wake()
    return 1
end
return 0
