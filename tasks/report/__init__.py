"""What people see of a run: per-clip rows and previews."""
