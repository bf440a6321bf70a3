"""The report's vocabulary: change kinds, job statuses, counters, the ratio rule, CBS field names
and the streaming JSON rendering (cbs-api.md §4–6)."""
