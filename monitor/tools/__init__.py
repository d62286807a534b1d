"""The command line and what it runs besides the daemon: analyze, probe, eval, doctor, demo and
download-model.
"""
