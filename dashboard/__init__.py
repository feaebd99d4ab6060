"""Parts of the dashboard read-API (`dashboard_api.py` is the entry point)."""
