-- Schema version 2: the fencing token, a per-job count of claims that only ever grows.

-- Each claim sets claims = claims + 1 and hands the new value to its worker as the token
-- that every write for that claim (ack, heartbeat) must match. Nothing else changes it: a
-- re-run from the dead-letter queue resets attempt, a hand-back gives the attempt back, but
-- neither gives a token back, so (id, claims) never repeats for the life of a job. Existing
-- jobs start from their attempt, so a claim in flight during the upgrade keeps matching.
ALTER TABLE stagecrew_jobs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;

UPDATE stagecrew_jobs SET claims = attempt WHERE attempt <> 0;
