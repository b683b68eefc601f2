"""Pure rules: text made storable, prices, prompts and size limits. Imports nothing of batchgen and
no Django model, Redis or HTTP, so every other package may use it.
"""
