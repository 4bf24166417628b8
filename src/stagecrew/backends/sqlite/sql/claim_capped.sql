-- A capped claim's next page of candidates: up to :page due jobs after (:priority, :order_at, :id) in claim order, among the per-queue candidates the backend splices in below.
-- The backend applies the caps to them (caps.select_within_caps) and reads on while it has
-- taken fewer than it may and a page came back full.
SELECT id, task, queue, concurrency_key, priority, order_at FROM ({candidates})
ORDER BY priority, order_at, id
LIMIT :page
