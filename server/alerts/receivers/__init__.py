"""Receivers of alert notifications: webhook (Alertmanager's payload), email (SMTP), syslog."""
