"""The operator console: what the daemon saw lately, kept in memory, served as web pages."""
