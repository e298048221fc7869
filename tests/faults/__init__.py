"""Fault injection: the proxy killed, its database stopped, its disk full, under load."""
