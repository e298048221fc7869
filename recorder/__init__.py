"""The protoevents recorder, embedded by components to emit typed events."""
