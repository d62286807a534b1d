"""The model stage: pixel budget and JPEG, prompts, the answer schema and its parsing, the
client and the endpoint pool.
"""
