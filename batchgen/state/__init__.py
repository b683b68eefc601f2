"""State shared by every process through Redis: one connection factory (shared), the circuit
breakers and the heartbeats. May import core; knows nothing of the ORM, the LLM SDKs or
Telegram.
"""
