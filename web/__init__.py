"""The HTTP entry points: each view parses its input, calls one use case, and renders the result."""
