"""Models and adapters that setup builds locally (no model hub): see `build`, `tiny`, `adapters`."""
