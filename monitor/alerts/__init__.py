"""The alerts stage: the hazard tracker, MQTT payloads, the durable outbox, the publisher, Home
Assistant discovery and evidence images. Nothing here imports ingest.
"""
