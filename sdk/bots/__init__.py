"""Example bots on the SDK: a market maker and a GPU operator's quoter, and the strip buyer
the demo's taker uses.

The first two split a pure planner (what the quotes, and the operator's issues, should be,
given the market and the account) from a loop that reads the market, plans, and sends a mass
quote only when the plan changes. The strip buyer quotes a strip and sends it at the quote
plus a slippage, or nothing when the quote says it would be refused.
"""
