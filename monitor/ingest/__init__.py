"""Ingest: stream sources and URLs, the camera reader and its receivers, sampling and the
change gate. Everything before the model: frames come in, the newest frame of a camera goes out.
"""
