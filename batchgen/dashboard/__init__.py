"""What the staff dashboard, /healthz and the terminal reports read: queries and aggregates with a
fixed number of statements, server-side charts. Read only: it changes no state. May import every
layer below it.
"""
