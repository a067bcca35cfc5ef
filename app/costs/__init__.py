"""The cost family: what a query cost, where that is recorded, and what it all adds up to.

- `meter`: one query's energy and money, measured while it runs (and the work in flight it shares the box with).
- `ledger`: query_log, one row per ask carrying the meter's record; written and read back as rows here.
- `reports`: the ledger's sums in SQL (over the trigger-kept daily sums, query_cost_daily, where they serve):
  rollups for `sparq costs` and the API, the Costs page's figures, what a budget has used.
- `budgets`: limits on those sums per user or group and period, checked before the model is called.

Nothing is re-exported here: import the module that holds the concept."""
