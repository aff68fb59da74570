"""Developer tools: the demo (tools/demo.py) and the benchmark (tools/bench/)."""
