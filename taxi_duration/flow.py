def add_flow_args(p): return p
def add_backfill_args(p): return p
