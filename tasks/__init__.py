"""Units of work, data types and the plain logic they run. No Prefect here: flows/ wraps these."""
