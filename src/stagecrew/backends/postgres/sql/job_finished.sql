-- Whether job %(id)s is final (succeeded, dead, cancelled); no row: it is gone. The one read of a finish wait.
SELECT state IN ('succeeded', 'dead', 'cancelled') FROM {schema}.jobs WHERE id = %(id)s
