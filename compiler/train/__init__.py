"""`kdc train` and `kdc eval`: the student, TRL fine-tuning, base-vs-tuned evaluation."""
