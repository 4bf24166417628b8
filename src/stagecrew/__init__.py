"""stagecrew: background jobs that survive crashes."""
