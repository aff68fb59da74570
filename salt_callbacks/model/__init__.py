"""The domain: callback records and their state machine, the retry schedule, input validation."""
