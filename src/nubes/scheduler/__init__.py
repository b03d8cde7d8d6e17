"""The scheduler: a pure function from a snapshot of hosts and a request to a plan or an
explanation. No I/O; the compute service builds the snapshot and commits the plan."""
