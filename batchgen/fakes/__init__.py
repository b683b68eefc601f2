"""Local stand-ins for the outside services (LLM providers), for tests, benchmarks and demos.
"""
