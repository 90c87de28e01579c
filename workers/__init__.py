"""pagemill's data plane: task bodies for the cpu and gpu queues and the engines they call."""
