"""`kdc review`: human spot checks, applied back to the build."""
