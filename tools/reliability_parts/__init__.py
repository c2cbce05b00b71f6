"""The parts of the reliability suite (tools/reliability.py runs them); each owns one kind of fault."""
