"""Pure domain logic of the scheduler: no I/O, no protobuf, no SQL."""
