"""Bus taps: uTwin plugged into a uProtocol bus, storing every publish message it carries."""
