-- Delete finished jobs matching a JobFilter, never waiting or running ones.
DELETE FROM {schema}.jobs AS j
WHERE j.state IN ('succeeded', 'dead', 'cancelled') {filter}
