"""The engine and its parts: scheduling, dispatching attempts, reading and writing records, the transport."""
