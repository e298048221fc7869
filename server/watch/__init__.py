"""Live changes for WatchEvents: the in-process hub and its Redis fan-out."""
