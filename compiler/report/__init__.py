"""`kdc report` and the dataset card."""
