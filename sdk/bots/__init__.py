"""Example bots on the SDK: a market maker and a GPU operator's quoter.

Each splits a pure planner (what the quotes, and the operator's issues, should be, given the
market and the account) from a loop that reads the market, plans, and sends a mass quote
only when the plan changes.
"""
