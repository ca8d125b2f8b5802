"""Leader-only duties (lease rescue; later cron firing and retention). Each runs as a loop in the
scheduler process, acts only while `LeaderElector.is_leader`, and opens every transaction with
the epoch check, so it never runs as a job in a queue it serves and a deposed leader never
writes."""
