"""The controller process: initialise a state directory, run the API, start and stop."""
