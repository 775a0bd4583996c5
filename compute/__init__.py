"""Pure computations on the normalized records: rolling windows, candles, signals, market
state, the Korean premium and the consolidated BBO.

Nothing here imports Faust, the agents or the app, or reads settings: every parameter is an
argument. `agents/` keeps the results in tables and publishes them; docs/features.md
defines them.
"""
