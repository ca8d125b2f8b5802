"""The jobsched scheduler service: owns the job store and serves JobService (and, later, executors)."""
