"""`conveyor demo`: the whole application-change workflow, end to end, on this machine."""
