"""Turning queued work into sent messages: a run (runs) keeps its slots busy through the drain
(drain), work that can wait takes the provider batch route (batch_route), and the tick
(scheduler) gives idle workers runs. May import conversations, work, models, llm, telegram,
metrics, state and core.
"""
