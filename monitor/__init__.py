"""monitor: a real-time camera-stream safety monitor.

RTSP cameras → sampled frames → Qwen2.5-VL on vLLM (OpenAI-compatible API) → confirmed hazards
(fire, smoke, missing hard hats) → MQTT alerts.
"""

__version__ = "0.1.0"
