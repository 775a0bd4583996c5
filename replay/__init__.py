"""Record/replay tooling: read recordings (`recordings`), serve them back (`server`, `python -m
replay serve DIR`), record live sessions (`recorder`), and the subscriptions recorded with them
(`subscriptions`). No production module reads recording files; the app uses this package only
when `KCS_REPLAY` or `KCS_RECORD` is set.
"""
