"""The designs protoevents is compared against, each driven in the same run as protoevents."""
