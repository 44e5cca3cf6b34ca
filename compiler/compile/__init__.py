"""`kdc compile`: plan, prompts, generation requests and the build that drives them."""
