"""Rate limits of the LLM providers: the rules as they state them (rules), the limits learned from
their replies (learned) and the budgets every worker shares through Redis (budgets). May import
state and core; no ORM.
"""
