"""Thin Prefect flows over the plain functions in tasks/."""
