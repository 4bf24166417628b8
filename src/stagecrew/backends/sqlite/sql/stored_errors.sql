-- A job's errors as a JSON array to append to (an expression, spliced into ack.sql and
-- settle_lost.sql): the stored array, or, where what is stored is not one, an array of the
-- :unreadable_errors entry (built in Python) whose traceback keeps the stored text.
coalesce(
    CASE WHEN json_valid(coalesce(errors, '[]')) THEN
        CASE WHEN json_type(coalesce(errors, '[]')) = 'array' THEN coalesce(errors, '[]') END
    END,
    json_array(json_set(:unreadable_errors, '$.traceback', errors))
)
