"""The running daemon: the supervisor, one pipeline per camera, telemetry, systemd notify and
logging.
"""
