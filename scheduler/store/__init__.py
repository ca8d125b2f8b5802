"""The job store: every SQL statement lives here, one named function each."""
