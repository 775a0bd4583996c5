"""Faust wiring only: the app object (`application`), every topic (`topics`), tables, agents
and their views, and the one module of private Faust touches (`faust_internals`).

Importing this package registers nothing; `app/main.py` imports the agent modules
(`market_data`, `cross_exchange`), which register their agents, tables and views on
`agents.application.app`. The computations themselves are in `compute/`.
"""
