"""The VLM simulator: synthetic construction-site scenes and an OpenAI-compatible server that
judges them by their pixels, standing in for Qwen2.5-VL on vLLM in tests, demos and benchmarks.

* :mod:`monitor.sim.scenes` renders scripted scenes (fire, smoke, workers with and without hard
  hats) and writes them as H.264 MP4 files an RTSP server can loop;
* :mod:`monitor.sim.vision` judges any (resized, JPEG-compressed) frame of such a scene by the
  colour rules documented in :mod:`monitor.sim.scenes`;
* :mod:`monitor.sim.server` serves that judgement over the OpenAI chat-completions API, with
  fault injection (latency, errors, hangs, unparseable answers);
* :mod:`monitor.sim.broker` runs a private Mosquitto broker for the same purposes.
"""
