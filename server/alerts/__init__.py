"""Alerts: rules matched against the durable log, grouped, silenced and notified."""
